"""Stage 6: score the head on the test split; write the metrics git tracks, a per-class table and plots.

metrics/test.json holds accuracy, loss, top5_accuracy, balanced_accuracy (mean per-class accuracy),
macro_f1 and n_test, so `dvc metrics diff` compares runs across commits. metrics/predictions.csv feeds
`dvc plots`' confusion template; metrics/confusion_matrix.png is the same matrix for people.

Every experiment runs this stage, so it imports only what it uses: the head's forward pass and the metrics are
NumPy (transfer/inference.py; the definitions are scikit-learn's, checked against it in tests/test_evaluate.py),
not Keras on TensorFlow, scikit-learn or pandas, whose imports took longer than the evaluation itself.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from transfer import cli, params
from transfer.errors import StageError
from transfer.feature_cache import load_classes, load_part
from transfer.files import atomic_output, write_json
from transfer.inference import predict


def counts(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: true positives, predicted count, actual count."""
    true_positives = np.bincount(labels[labels == predicted], minlength=n_classes)
    return true_positives, np.bincount(predicted, minlength=n_classes), np.bincount(labels, minlength=n_classes)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator != 0)


def precision_recall_f1(labels: np.ndarray, predicted: np.ndarray, n_classes: int):
    """scikit-learn's precision_recall_fscore_support(labels=range(n_classes), zero_division=0)."""
    true_positives, predicted_count, actual_count = counts(labels, predicted, n_classes)
    tp = true_positives.astype(np.float64)
    precision, recall = _divide(tp, predicted_count.astype(np.float64)), _divide(tp, actual_count.astype(np.float64))
    f1 = _divide(2 * tp, (predicted_count + actual_count).astype(np.float64))
    return precision, recall, f1, actual_count


def score(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    top5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    _, recall, f1, actual_count = precision_recall_f1(labels, predicted, n_classes)
    eps = np.finfo(probabilities.dtype).eps  # log_loss clips to [eps, 1 - eps]
    likelihood = np.clip(probabilities[np.arange(len(labels)), labels], eps, 1 - eps)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(np.mean(-np.log(likelihood))),
        "top5_accuracy": float(np.mean((top5 == labels[:, None]).any(axis=1))),
        "balanced_accuracy": float(np.mean(recall[actual_count > 0])),  # classes absent from the test set drop out
        "macro_f1": float(np.mean(f1)),
        "n_test": int(len(labels)),
    }


def write_csv(path: Path, header: list[str], rows) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def per_class_rows(labels: np.ndarray, predicted: np.ndarray, classes: list[str]):
    """class, precision, recall, f1, support; floats rounded to 6 digits and written as pandas writes them."""
    precision, recall, f1, support = precision_recall_f1(labels, predicted, len(classes))
    columns = [np.round(column, 6).tolist() for column in (precision, recall, f1)]
    return [[name, *(column[i] for column in columns), int(support[i])] for i, name in enumerate(classes)]


def test_paths(split_dir: Path) -> list[str]:
    path = Path(split_dir) / "test.csv"
    if not path.is_file():
        raise StageError(f"{path} not found; run `dvc repro split` first")
    with open(path, newline="", encoding="utf-8") as file:
        return [row["path"] for row in csv.DictReader(file)]


def evaluate(features_dir: Path, split_dir: Path, model_path: Path, metrics_dir: Path) -> dict:
    from transfer.plots import plot_confusion

    if not Path(model_path).is_file():
        raise StageError(f"{model_path} not found; run `dvc repro train` first")
    classes = load_classes(features_dir)
    features, labels = load_part(features_dir, "test")
    probabilities = np.asarray(predict(model_path, features), dtype=np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1
    predicted = probabilities.argmax(axis=1)

    metrics_dir = Path(metrics_dir)
    results = score(labels, probabilities)
    write_json(metrics_dir / "test.json", results)
    write_csv(
        metrics_dir / "per_class.csv",
        ["class", "precision", "recall", "f1", "support"],
        per_class_rows(labels, predicted, classes),
    )
    paths = test_paths(split_dir)
    if len(paths) != len(labels):
        raise StageError(
            f"{split_dir}/test.csv lists {len(paths)} images, the cached features {len(labels)}; rerun `dvc repro`"
        )
    names = np.array(classes)
    write_csv(
        metrics_dir / "predictions.csv",
        ["path", "actual", "predicted"],
        zip(paths, names[labels].tolist(), names[predicted].tolist(), strict=True),
    )
    plot_confusion(labels, predicted, classes, metrics_dir / "confusion_matrix.png")
    print(
        "evaluate: "
        + ", ".join(
            f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in results.items()
        )
    )
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
