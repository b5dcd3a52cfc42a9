"""Test and benchmark data makers: generated archives byte by byte as real tools write them, an image corpus,
and the project's own reproducibility check. Not used by the pipeline."""
