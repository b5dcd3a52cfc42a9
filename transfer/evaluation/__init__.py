"""Scoring a classifier on the test split: the metrics git tracks, the per-class table, the predictions and the
confusion matrix, as evaluate writes them for the head and finetune for the fine-tuned classifier."""
