"""Benchmarks: `python -m benchmarks.benchmark` (CPU, the feature cache against the tutorial's way) and
`benchmarks/gpu_benchmark.sh` (feature extraction on one GPU). See benchmarks/benchmark.py."""
