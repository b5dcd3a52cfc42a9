"""The classifier head on the cached features: training, its forward pass in NumPy, the confusion plot."""
