"""Stage 7: export the classifier the pipeline delivers, as one Keras model of raw images: resize, preprocess,
backbone, head.

It is the head on the frozen backbone, or, when fine-tuning kept an epoch (models/finetuned/weights.npz), the backbone
and head with the fine-tuned weights; the model's name says which. models/classifier.keras takes RGB images of any
size (uint8 or float, 0-255) and returns class probabilities; it is built from Keras' own layers and carries the class
names (transfer/artifacts/classifier.py), so `keras.saving.load_model` loads it without this project, on any backend.
models/classes.json beside it names the classes too, in output order, for clients that read JSON.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

from transfer.artifacts.classifier import FINETUNED, FROZEN, KINDS, build_classifier
from transfer.artifacts.keras_files import save_model
from transfer.core import cli, devices, params
from transfer.core.errors import StageError
from transfer.core.files import atomic_output
from transfer.features.cache import load_classes
from transfer.finetune import weights


def export(
    head_path: Path, finetuned_dir: Path, features_dir: Path, classifier_path: Path, config: params.FeaturesParams
) -> None:
    if not Path(head_path).is_file():
        raise StageError(f"{head_path} not found; run `dvc repro train` first")
    tuned = weights.load(finetuned_dir)  # before Keras: a missing record is named at once
    keras = devices.use("tensorflow")
    from transfer.features.backbones import build_extractor

    classes = load_classes(features_dir)
    head = keras.models.load_model(head_path, compile=False)
    extractor, name = None, FROZEN
    if tuned is not None:
        # The fine-tuned weights replace every weight, so the architecture alone is built (no weights file needed).
        extractor, name = build_extractor(config.backbone, None, config.image_size), FINETUNED
        extractor.set_weights(tuned.extractor)
        head.set_weights(tuned.head)
    classifier = build_classifier(head, config, classes, extractor, name)
    classifier_path = Path(classifier_path)
    with atomic_output(classifier_path, suffix=".keras") as tmp:
        save_model(classifier, tmp)
    with atomic_output(classifier_path.with_name("classes.json")) as tmp:
        shutil.copyfile(Path(features_dir) / "classes.json", tmp)
    print(f"export: {config.backbone}, {KINDS[name]}, {len(classes)} classes -> {classifier_path}")


def main(head_path: Path, finetuned_dir: Path, features_dir: Path, classifier_path: Path) -> None:
    export(head_path, finetuned_dir, features_dir, classifier_path, params.load().features)
    gc.freeze()  # the outputs are written: spare the exit the collector's walk over the backbone (devices.py)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        head_path="the trained head (models/head.keras)",
        finetuned_dir="what fine-tuning kept: its summary, and its weights if any (models/finetuned)",
        features_dir="cached features, for the class list (data/features)",
        classifier_path="where the classifier is written (models/classifier.keras)",
    )
