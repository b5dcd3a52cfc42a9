"""Classify images with the exported model: `python -m transfer.predict IMAGE_OR_FOLDER [...]`.

Prints each image's path, then its top classes as `label<TAB>probability` lines; --json prints the same
as JSON. A folder stands for the image files in it (and its subfolders). A path that is not a readable
image is named on stderr with the reason, the others are still classified, and the exit status is 1.
Runs from any directory as the `predict` command that `setup.sh` installs into .venv (or `python -m
transfer.predict`); the default model is the project's models/classifier.keras. Not a pipeline stage: it uses what
`dvc repro` exported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transfer import devices
from transfer.cli import run
from transfer.errors import StageError
from transfer.images import SUFFIXES, ImageError, load_image

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = PROJECT / "models" / "classifier.keras"
BATCH_SIZE = 32


def load_classifier(model_path: Path):
    """The exported classifier, its classes and its input size."""
    model_path, classes_path = Path(model_path), Path(model_path).with_name("classes.json")
    for path in (model_path, classes_path):
        if not path.is_file():
            raise StageError(
                f"{path} not found; run `dvc repro` in {PROJECT} to train and export the classifier, or pass --model"
            )
    keras = devices.use("tensorflow")
    import transfer.backbones  # noqa: F401  registers the Preprocess layer the model uses

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as error:  # a damaged or foreign file: Keras raises many types
        raise StageError(
            f"{model_path} is not a classifier exported by this project ({str(error).splitlines()[0][:200]})"
        ) from None
    image_size = model.get_layer("resize").height
    return model, json.loads(classes_path.read_text(encoding="utf-8")), image_size


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; folders as the image files below them, sorted."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        else:
            found.append(path)
    return found


def predict(model, classes: list[str], image_size: int, image_paths: list[Path], top: int):
    """({path: [(label, probability), ...]}, {path: why it could not be read})."""
    import numpy as np

    images, errors = {}, {}
    for path in image_paths:
        try:
            images[str(path)] = load_image(path, image_size)
        except ImageError as error:
            errors[str(path)] = str(error)
    names = list(images)
    results = {}
    for start in range(0, len(names), BATCH_SIZE):
        chunk = names[start : start + BATCH_SIZE]
        probabilities = np.asarray(model.predict_on_batch(np.stack([images[p] for p in chunk])))
        for path, row in zip(chunk, probabilities, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            results[path] = [(classes[i], float(row[i])) for i in best]
    return results, errors


def format_text(results: dict[str, list[tuple[str, float]]]) -> str:
    lines = []
    for path, ranked in results.items():
        lines.append(path)
        lines += [f"{label}\t{probability:.4f}" for label, probability in ranked]
    return "\n".join(lines)


def format_json(results: dict[str, list[tuple[str, float]]]) -> str:
    data = {
        path: [{"label": label, "probability": round(p, 6)} for label, p in ranked] for path, ranked in results.items()
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def main(paths: list[Path], model_path: Path, top: int, as_json: bool) -> None:
    if top < 1:
        raise StageError(f"--top must be at least 1, got {top}")
    image_paths = expand(paths)
    if not image_paths:
        raise StageError(f"no image files in {', '.join(map(str, paths))} ({', '.join(SUFFIXES)})")
    model, classes, image_size = load_classifier(model_path)
    results, errors = predict(model, classes, image_size, image_paths, min(top, len(classes)))
    if results:
        print(format_json(results) if as_json else format_text(results))
    for path, reason in errors.items():
        print(f"error: {path}: {reason}", file=sys.stderr)
    if errors:
        raise SystemExit(1)


def cli() -> None:
    """The `predict` console script."""
    parser = argparse.ArgumentParser(description="Classify images with the exported classifier.")
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help=f"exported classifier (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--top", type=int, default=5, help="how many classes to print per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args()
    run(lambda: main(args.images, args.model, args.top, args.json))


if __name__ == "__main__":
    cli()
