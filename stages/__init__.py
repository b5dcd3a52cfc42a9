"""The pipeline's stages, one module each; dvc.yaml runs them as `python -m stages.<name>`."""

import os

# Keep stage logs to progress and results: hide TensorFlow's C++ start-up INFO and WARNING lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
