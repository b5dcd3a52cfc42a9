"""Classify images with the exported model: `python -m stages.predict IMAGE [IMAGE ...]`.

Prints each image's path, then its top classes as `label<TAB>probability` lines; --json prints the same
as JSON. Not a pipeline stage: it uses what `dvc repro` exported to models/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stages.common import StageError, run


def load_classifier(model_path: Path):
    import keras

    import stages.backbones  # noqa: F401  registers the Preprocess layer the model uses

    classes_path = Path(model_path).with_name("classes.json")
    if not Path(model_path).is_file() or not classes_path.is_file():
        raise StageError(f"{model_path} or {classes_path} not found; run `dvc repro` to train and export the classifier")
    model = keras.models.load_model(model_path, compile=False)
    return model, json.loads(classes_path.read_text(encoding="utf-8"))


def predict(model, classes: list[str], image_paths: list[Path], top: int) -> dict[str, list[tuple[str, float]]]:
    import numpy as np
    import tensorflow as tf

    from stages.backbones import decode_image

    results = {}
    for path in image_paths:
        try:
            image = decode_image(tf.constant(str(path)))
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            raise StageError(f"{path}: not a readable image ({error.message.splitlines()[0]})") from None
        probabilities = np.asarray(model(image[tf.newaxis], training=False))[0]
        best = np.argsort(-probabilities, kind="stable")[:top]
        results[str(path)] = [(classes[i], float(probabilities[i])) for i in best]
    return results


def format_text(results: dict[str, list[tuple[str, float]]]) -> str:
    lines = []
    for path, ranked in results.items():
        lines.append(path)
        lines += [f"{label}\t{probability:.4f}" for label, probability in ranked]
    return "\n".join(lines)


def format_json(results: dict[str, list[tuple[str, float]]]) -> str:
    data = {path: [{"label": label, "probability": round(p, 6)} for label, p in ranked] for path, ranked in results.items()}
    return json.dumps(data, indent=2)


def main(image_paths: list[Path], model_path: Path, top: int, as_json: bool) -> None:
    if top < 1:
        raise StageError(f"--top must be at least 1, got {top}")
    model, classes = load_classifier(model_path)
    results = predict(model, classes, image_paths, min(top, len(classes)))
    print(format_json(results) if as_json else format_text(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Classify images with the exported classifier.")
    parser.add_argument("images", type=Path, nargs="+", help="image files (JPEG, PNG, GIF, BMP, WebP)")
    parser.add_argument("--model", type=Path, default=Path("models/classifier.keras"), help="exported classifier")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args()
    run(lambda: main(args.images, args.model, args.top, args.json))
