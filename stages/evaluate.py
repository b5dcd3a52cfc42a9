"""Stage 6: score the head on the test split; write the metrics git tracks, a per-class table and plots.

metrics/test.json holds accuracy, loss, top5_accuracy, balanced_accuracy (mean per-class accuracy),
macro_f1 and n_test, so `dvc metrics diff` compares runs across commits. metrics/predictions.csv feeds
`dvc plots`' confusion template; metrics/confusion_matrix.png is the same matrix for people, and
metrics/top_losses.png shows the test images with the highest loss (from data/images), as fastai's plot_top_losses.

Every experiment runs this stage, so it does not import Keras on TensorFlow, whose start-up took longer than the
evaluation itself: the head's forward pass is NumPy (transfer/evaluation/numpy_forward.py, checked against Keras in
tests/test_evaluate.py); the metrics are scikit-learn's.
"""

from __future__ import annotations

from pathlib import Path

from transfer.core import cli, params
from transfer.evaluation.scores import score_head, summary


def evaluate(features_dir: Path, split_dir: Path, images_dir: Path, model_path: Path, metrics_dir: Path) -> dict:
    results = score_head(features_dir, split_dir, model_path, metrics_dir, images_dir)
    print(summary("evaluate", results))
    return results


def main(features_dir: Path, split_dir: Path, images_dir: Path, model_path: Path, metrics_dir: Path) -> None:
    params.load()  # validate params.yaml even though evaluation reads none of them
    evaluate(features_dir, split_dir, images_dir, model_path, metrics_dir)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        features_dir="cached features (data/features)",
        split_dir="manifests, for the test images' paths (data/split)",
        images_dir="class folders of images, for the picture of the top losses (data/images)",
        model_path="the trained head (models/head.keras)",
        metrics_dir="where test.json, per_class.csv and the plots go (metrics)",
    )
