"""Stage 6: score the head on the test split; write the metrics git tracks, a per-class table and plots.

metrics/test.json holds accuracy, loss, top5_accuracy, balanced_accuracy (mean per-class accuracy),
macro_f1 and n_test, so `dvc metrics diff` compares runs across commits. metrics/predictions.csv feeds
`dvc plots`' confusion template; metrics/confusion_matrix.png is the same matrix for people.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from transfer import cli, devices, params
from transfer.errors import StageError
from transfer.feature_cache import load_classes, load_part
from transfer.files import atomic_output, write_json
from transfer.plots import plot_confusion


def score(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    from sklearn import metrics

    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    top5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    everyone = list(range(n_classes))
    return {
        "accuracy": metrics.accuracy_score(labels, predicted),
        "loss": metrics.log_loss(labels, probabilities, labels=everyone),
        "top5_accuracy": float(np.mean((top5 == labels[:, None]).any(axis=1))),
        "balanced_accuracy": metrics.balanced_accuracy_score(labels, predicted),
        "macro_f1": metrics.f1_score(labels, predicted, average="macro", labels=everyone, zero_division=0),
        "n_test": int(len(labels)),
    }


def per_class_table(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=list(range(len(classes))), zero_division=0
    )
    table = pd.DataFrame({"class": classes, "precision": precision, "recall": recall, "f1": f1, "support": support})
    return table.round(6)


def evaluate(features_dir: Path, split_dir: Path, model_path: Path, metrics_dir: Path) -> dict:
    keras = devices.use("tensorflow")

    if not Path(model_path).is_file():
        raise StageError(f"{model_path} not found; run `dvc repro train` first")
    classes = load_classes(features_dir)
    features, labels = load_part(features_dir, "test")
    head = keras.models.load_model(model_path, compile=False)
    probabilities = np.asarray(head.predict(features, batch_size=1024, verbose=0), dtype=np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1
    predicted = probabilities.argmax(axis=1)

    metrics_dir = Path(metrics_dir)
    results = score(labels, probabilities)
    write_json(metrics_dir / "test.json", results)
    table = per_class_table(labels, predicted, classes)
    with atomic_output(metrics_dir / "per_class.csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    manifest = pd.read_csv(Path(split_dir) / "test.csv", dtype=str, keep_default_na=False)
    names = np.array(classes)
    predictions = pd.DataFrame({"path": manifest["path"], "actual": names[labels], "predicted": names[predicted]})
    with atomic_output(metrics_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False, lineterminator="\n")
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
