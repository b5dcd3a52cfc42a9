"""Stage 7: export one Keras model that classifies raw images: resize, preprocess, backbone, head.

models/classifier.keras takes RGB images of any size (uint8 or float, 0-255) and returns class
probabilities; it is built from Keras' own layers and carries the class names (transfer/artifacts/classifier.py), so
`keras.saving.load_model` loads it without this project, on any backend. models/classes.json beside it names the
classes too, in output order, for clients that read JSON.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

from transfer.artifacts.classifier import build_classifier
from transfer.artifacts.keras_files import save_model
from transfer.core import cli, devices, params
from transfer.core.errors import StageError
from transfer.core.files import atomic_output
from transfer.features.cache import load_classes


def export(head_path: Path, features_dir: Path, classifier_path: Path, config: params.FeaturesParams) -> None:
    keras = devices.use("tensorflow")

    if not Path(head_path).is_file():
        raise StageError(f"{head_path} not found; run `dvc repro train` first")
    classes = load_classes(features_dir)
    classifier = build_classifier(keras.models.load_model(head_path, compile=False), config, classes)
    classifier_path = Path(classifier_path)
    with atomic_output(classifier_path, suffix=".keras") as tmp:
        save_model(classifier, tmp)
    with atomic_output(classifier_path.with_name("classes.json")) as tmp:
        shutil.copyfile(Path(features_dir) / "classes.json", tmp)
    print(f"export: {config.backbone} + head, {len(classes)} classes -> {classifier_path}")


def main(head_path: Path, features_dir: Path, classifier_path: Path) -> None:
    export(head_path, features_dir, classifier_path, params.load().features)
    gc.freeze()  # the outputs are written: spare the exit the collector's walk over the backbone (devices.py)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        head_path="the trained head (models/head.keras)",
        features_dir="cached features, for the class list (data/features)",
        classifier_path="where the classifier is written (models/classifier.keras)",
    )
