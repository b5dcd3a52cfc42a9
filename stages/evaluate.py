"""Stage 6: score the head on the test split; write the metrics git tracks, a per-class table and plots.

metrics/test.json holds accuracy, loss, top5_accuracy, balanced_accuracy (mean per-class accuracy),
macro_f1 and n_test, so `dvc metrics diff` compares runs across commits. metrics/predictions.csv feeds
`dvc plots`' confusion template; metrics/confusion_matrix.png is the same matrix for people.

Every experiment runs this stage, so it does not import Keras on TensorFlow, whose start-up took longer than the
evaluation itself: the head's forward pass is NumPy (transfer/head/numpy_forward.py, checked against Keras in
tests/test_evaluate.py); the metrics are scikit-learn's.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from transfer.core import cli, params
from transfer.core.errors import StageError
from transfer.core.files import atomic_output, write_json
from transfer.core.manifests import read_manifest
from transfer.features.cache import load_classes, load_part
from transfer.head.numpy_forward import predict


def score(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    from sklearn import metrics

    everyone = list(range(probabilities.shape[1]))
    predicted = probabilities.argmax(axis=1)
    # With five classes or fewer every label is among the top five (scikit-learn warns, or refuses two classes).
    top5 = metrics.top_k_accuracy_score(labels, probabilities, k=5, labels=everyone) if len(everyone) > 5 else 1.0
    return {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "loss": metrics.log_loss(labels, probabilities, labels=everyone),
        "top5_accuracy": top5,
        "balanced_accuracy": metrics.balanced_accuracy_score(labels, predicted),
        "macro_f1": metrics.f1_score(labels, predicted, average="macro", labels=everyone, zero_division=0),
        "n_test": int(len(labels)),
    }


def write_csv(path: Path, header: list[str], rows) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def per_class_rows(labels: np.ndarray, predicted: np.ndarray, classes: list[str]):
    """class, precision, recall, f1, support; floats rounded to 6 digits."""
    from sklearn.metrics import precision_recall_fscore_support

    columns = precision_recall_fscore_support(labels, predicted, labels=list(range(len(classes))), zero_division=0)
    precision, recall, f1 = (np.round(column, 6).tolist() for column in columns[:3])
    return [[name, precision[i], recall[i], f1[i], int(columns[3][i])] for i, name in enumerate(classes)]


def write_results(metrics_dir: Path, labels: np.ndarray, probabilities: np.ndarray, classes: list[str], paths) -> dict:
    """test.json, per_class.csv, predictions.csv and confusion_matrix.png in metrics_dir, from the test images'
    labels and class probabilities (rows summing to 1); the scores. The fine-tuning stage writes the same."""
    from transfer.head.plots import plot_confusion

    predicted = probabilities.argmax(axis=1)
    metrics_dir = Path(metrics_dir)
    results = score(labels, probabilities)
    write_json(metrics_dir / "test.json", results)
    write_csv(
        metrics_dir / "per_class.csv",
        ["class", "precision", "recall", "f1", "support"],
        per_class_rows(labels, predicted, classes),
    )
    names = np.array(classes)
    write_csv(
        metrics_dir / "predictions.csv",
        ["path", "actual", "predicted"],
        zip(paths, names[labels].tolist(), names[predicted].tolist(), strict=True),
    )
    plot_confusion(labels, predicted, classes, metrics_dir / "confusion_matrix.png")
    return results


def summary(stage: str, results: dict) -> str:
    values = (f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in results.items())
    return f"{stage}: " + ", ".join(values)


def evaluate(features_dir: Path, split_dir: Path, model_path: Path, metrics_dir: Path) -> dict:
    if not Path(model_path).is_file():
        raise StageError(f"{model_path} not found; run `dvc repro train` first")
    classes = load_classes(features_dir)
    features, labels = load_part(features_dir, "test")
    probabilities = np.asarray(predict(model_path, features), dtype=np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1
    paths = read_manifest(split_dir, "test")["path"].tolist()
    if len(paths) != len(labels):
        raise StageError(
            f"{split_dir}/test.csv lists {len(paths)} images, the cached features {len(labels)}; rerun `dvc repro`"
        )
    results = write_results(metrics_dir, labels, probabilities, classes, paths)
    print(summary("evaluate", results))
    return results


def main(features_dir: Path, split_dir: Path, model_path: Path, metrics_dir: Path) -> None:
    params.load()  # validate params.yaml even though evaluation reads none of them
    evaluate(features_dir, split_dir, model_path, metrics_dir)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        features_dir="cached features (data/features)",
        split_dir="manifests, for the test images' paths (data/split)",
        model_path="the trained head (models/head.keras)",
        metrics_dir="where test.json, per_class.csv and the plots go (metrics)",
    )
