"""A fixed feature cache made with NumPy alone (no backbone, so the same bytes on every machine), and the metrics
train + evaluate give on it: tests/test_evaluate.py compares the stages against head_golden.json, which this
script wrote by running the stages as they were before evaluate left Keras and scikit-learn (commit d2f3b68):

    PYTHONPATH=<checkout of d2f3b68> python tests/head_golden.py tests/head_golden.json
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

CLASSES = ["alpha", "beta", "gamma", "delta, with a comma", "épsilon"]
PARTS = {"train": 12, "val": 4, "test": 5}  # images per class
N_FEATURES = 48
TRAIN = dict(epochs=8, batch_size=16, learning_rate=0.003, hidden_units=32, dropout=0.5, logistic_c=0.5, seed=7)


def write_feature_cache(root: Path) -> dict[str, Path]:
    """root/features/<part>/{features,labels}.npy, classes.json and root/split/test.csv: overlapping classes, so
    that the heads make mistakes and every metric is informative."""
    rng = np.random.default_rng(2024)
    centres = rng.normal(0, 1, (len(CLASSES), N_FEATURES))
    features, split = root / "features", root / "split"
    split.mkdir(parents=True, exist_ok=True)
    for part, per_class in PARTS.items():
        labels = np.repeat(np.arange(len(CLASSES)), per_class).astype(np.int32)
        x = (centres[labels] + rng.normal(0, 1.6, (len(labels), N_FEATURES))) * 3 + 2
        (features / part).mkdir(parents=True, exist_ok=True)
        np.save(features / part / "features.npy", np.maximum(x, 0).astype(np.float32))  # ReLU'd, as pooled features
        np.save(features / part / "labels.npy", labels)
        if part == "test":  # the manifest evaluate reads the image paths from
            with open(split / "test.csv", "w", newline="", encoding="utf-8") as file:
                writer = csv.writer(file, lineterminator="\n")
                writer.writerow(["path", "label"])
                writer.writerows([f"{CLASSES[y]}/image_{i:04d}.jpg", CLASSES[y]] for i, y in enumerate(labels))
    (features / "classes.json").write_text(json.dumps(CLASSES, ensure_ascii=False), encoding="utf-8")
    return {"features": features, "split": split}


def run_heads(root: Path, heads: tuple[str, ...] = ("dense", "logistic")) -> dict:
    """train + evaluate on the fixed cache, per head: evaluate's return value (unrounded), the DVCLive summary,
    and the md5 of the two CSV files evaluate writes."""
    from stages.evaluate import evaluate
    from stages.train import train
    from synthetic.repos import md5_of
    from transfer.core.params import TrainParams

    cache = write_feature_cache(root)
    results = {}
    for head in heads:
        out = root / head
        train(cache["features"], out / "head.keras", out / "live", TrainParams(head=head, **TRAIN))
        # No images: the top-losses picture shows each cell as "cannot show"; the golden values are the scores.
        metrics = evaluate(cache["features"], cache["split"], root / "no-images", out / "head.keras", out / "metrics")
        results[head] = {
            "test": metrics,
            "train": json.loads((out / "live" / "metrics.json").read_text()),
            "md5": {name: md5_of(out / "metrics" / name) for name in ("per_class.csv", "predictions.csv")},
        }
    return results


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        golden = run_heads(Path(scratch))
    Path(sys.argv[1]).write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n", encoding="utf-8")
