"""The classifier head on the cached features: training, the memory check, its forward pass in NumPy."""
