"""Stage 6: score the head on the test split; write the metrics git tracks, a per-class table and plots.

metrics/test.json holds accuracy, loss, top5_accuracy, balanced_accuracy (mean per-class accuracy),
macro_f1 and n_test, so `dvc metrics diff` compares runs across commits. metrics/predictions.csv feeds
`dvc plots`' confusion template; metrics/confusion_matrix.png is the same matrix for people.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from stages import backend, params
from stages.common import StageError, atomic_output, run, write_json
from stages.feature_cache import load_classes, load_part


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


def _fonts_for(names: list[str]) -> tuple[list[str], set[str]]:
    """Font families that together draw the names (matplotlib's default first, then any installed font covering
    characters it lacks, e.g. Noto Sans CJK), and the names that no installed font can draw."""
    from matplotlib import font_manager, ft2font, rcParams

    def charmap(path: str) -> set[int]:
        try:
            return set(ft2font.FT2Font(path).get_charmap())
        except (OSError, RuntimeError):
            return set()

    default = font_manager.FontProperties(family=rcParams["font.family"])
    families, covered = [default.get_family()[0]], charmap(font_manager.findfont(default))
    missing = {ord(c) for name in names for c in name} - covered
    # Matplotlib's "Last Resort" font maps every character to a box naming its Unicode block: not legible.
    fonts = [entry for entry in font_manager.fontManager.ttflist if not entry.name.startswith("Last Resort")]
    for entry in sorted(fonts, key=lambda entry: entry.name) if missing else []:
        found = missing & charmap(entry.fname)
        if found and entry.name not in families:
            families.append(entry.name)
            covered |= found
            missing -= found
    return families, {name for name in names if any(ord(c) not in covered for c in name)}


def confusion_figure(labels: np.ndarray, predicted: np.ndarray, classes: list[str]):
    """Row-normalised confusion matrix: the diagonal is each class's recall. A class name that no installed
    font can draw is shown as its index (#3: the row of per_class.csv) instead of as empty boxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    families, undrawable = _fonts_for(classes)
    shown = [f"#{i}" if name in undrawable else name for i, name in enumerate(classes)]
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(classes))), normalize="true")
    side = max(6.0, 0.16 * len(classes) + 3)
    with plt.rc_context({"font.family": families}):
        fig, ax = plt.subplots(figsize=(side, side))
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        ticks = np.arange(len(classes))
        font = max(4, min(10, 400 // len(classes)))
        ax.set_xticks(ticks, shown, rotation=90, fontsize=font)
        ax.set_yticks(ticks, shown, fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        title = f"Test confusion matrix (row-normalised), accuracy {np.mean(labels == predicted):.3f}"
        if undrawable:
            title += "\n#N: a class name no installed font draws; row N of per_class.csv"
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
    return fig, families


def plot_confusion(labels: np.ndarray, predicted: np.ndarray, classes: list[str], out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, families = confusion_figure(labels, predicted, classes)
    with atomic_output(out, suffix=".png") as tmp, plt.rc_context({"font.family": families}):
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)


def evaluate(features_dir: Path, split_dir: Path, model_path: Path, metrics_dir: Path) -> dict:
    keras = backend.use("tensorflow")

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features_dir", type=Path, help="cached features (data/features)")
    parser.add_argument("split_dir", type=Path, help="manifests, for the test images' paths (data/split)")
    parser.add_argument("model_path", type=Path, help="the trained head (models/head.keras)")
    parser.add_argument("metrics_dir", type=Path, help="where test.json, per_class.csv and the plots go (metrics)")
    args = parser.parse_args()
    run(lambda: main(args.features_dir, args.split_dir, args.model_path, args.metrics_dir))
