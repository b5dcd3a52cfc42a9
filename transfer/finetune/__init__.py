"""Fine-tuning, the second phase: the top blocks of the backbone and the trained head, on augmented images."""
