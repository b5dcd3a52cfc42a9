"""The data audit: near-duplicate images across the split and likely label errors, found in the cached features."""
