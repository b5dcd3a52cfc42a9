"""Made-up material for the tests and benchmarks, never used by the pipeline: image-folder archives in the
Caltech-101 layouts written byte by byte as real tools write them (datasets, archive_bytes), an image corpus in every
format (image_corpus), class folders with faults planted for the data audit (planted), and throwaway git + DVC
repositories holding this pipeline (repos)."""
