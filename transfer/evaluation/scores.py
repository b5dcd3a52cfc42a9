"""The test metrics and the files evaluate and finetune write from a classifier's test probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transfer.core.errors import StageError
from transfer.core.files import write_csv, write_json
from transfer.core.manifests import read_manifest
from transfer.evaluation.numpy_forward import predict
from transfer.features.cache import load_classes, load_part


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


def per_class_rows(labels: np.ndarray, predicted: np.ndarray, classes: list[str]):
    """class, precision, recall, f1, support; floats rounded to 6 digits."""
    from sklearn.metrics import precision_recall_fscore_support

    columns = precision_recall_fscore_support(labels, predicted, labels=list(range(len(classes))), zero_division=0)
    precision, recall, f1 = (np.round(column, 6).tolist() for column in columns[:3])
    return [[name, precision[i], recall[i], f1[i], int(columns[3][i])] for i, name in enumerate(classes)]


def write_results(
    metrics_dir: Path, labels: np.ndarray, probabilities: np.ndarray, classes: list[str], paths, images_dir: Path
) -> dict:
    """test.json, per_class.csv, predictions.csv, confusion_matrix.png and top_losses.png in metrics_dir, from the
    test images' labels and class probabilities (rows summing to 1) and their paths under images_dir; the scores.
    The fine-tuning stage writes the same."""
    from transfer.evaluation.pictures import plot_top_losses
    from transfer.evaluation.plots import plot_confusion

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
    plot_top_losses(labels, probabilities, classes, paths, images_dir, metrics_dir / "top_losses.png")
    return results


def summary(stage: str, results: dict) -> str:
    values = (f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in results.items())
    return f"{stage}: " + ", ".join(values)


def score_head(features_dir: Path, split_dir: Path, head_path: Path, metrics_dir: Path, images_dir: Path) -> dict:
    """Score a trained head on the cached test features (NumPy, no Keras) and write the results to metrics_dir (the
    top losses drawn from images_dir)."""
    if not Path(head_path).is_file():
        raise StageError(f"{head_path} not found; run `dvc repro train` first")
    classes = load_classes(features_dir)
    features, labels = load_part(features_dir, "test")
    probabilities = np.asarray(predict(head_path, features), dtype=np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1
    paths = read_manifest(split_dir, "test")["path"].tolist()
    if len(paths) != len(labels):
        raise StageError(
            f"{split_dir}/test.csv lists {len(paths)} images, the cached features {len(labels)}; rerun `dvc repro`"
        )
    return write_results(metrics_dir, labels, probabilities, classes, paths, images_dir)
