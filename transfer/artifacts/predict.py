"""Classify images with the exported model: `python -m transfer.artifacts.predict IMAGE_OR_FOLDER [...]`.

Prints each image's path, then its top classes as `label<TAB>probability` lines; --json prints one JSON document,
{"results": {path: [{"label", "probability"}, ...]}, "errors": {path: reason}}, in every case (with an "error" key
when nothing could be classified at all: no model, say). A folder stands for the files below it that the extract
stage would keep: whatever the shared decoder reads, whatever the name; folders are read one at a time and images
decoded a batch at a time, so memory stays flat however many there are. A path that is not a usable image, a folder
with none or an entry in one that cannot be read (a link cycle), is named on stderr with the reason, the others are
still classified, and the exit status is 1. A name that is not UTF-8 is printed with each undecodable byte as
`\\xNN`, so the JSON stays valid UTF-8. Runs from any directory as the `predict` command that `setup.sh` installs
into .venv (or `python -m transfer.artifacts.predict`); the default model is the project's models/classifier.keras,
and the class names come from inside it (--classes FILE checks a classes.json against them, by name). Not a pipeline
stage: it uses what `dvc repro` exported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from transfer.artifacts.classifier import class_names
from transfer.artifacts.predict_output import JsonDocument, printable, which
from transfer.core import devices
from transfer.core.cli import run
from transfer.core.errors import StageError
from transfer.core.images import SUFFIXES, ImageError, load_image

PROJECT = Path(__file__).resolve().parents[2]  # transfer/artifacts/predict.py -> the repository
DEFAULT_MODEL = PROJECT / "models" / "classifier.keras"
BATCH_SIZE = 32
NOT_AN_IMAGE = "not an image file (unrecognised content)"  # transfer/core/images.py's reason for other files
EMPTY = "no image files in this folder"


def _read_classes(path: Path) -> list[str]:
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StageError(f"{path} is not a readable class list ({error}); export again with `dvc repro`") from None
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        raise StageError(f"{path} is not a list of class names; export again with `dvc repro`")
    return classes


def _check_exported(model, model_path: Path) -> list[str]:
    """The model must be an exported classifier (raw RGB images in, one probability per class out, the class
    names inside); its class names."""
    if len(model.inputs) == 1 and len(model.inputs[0].shape) == 2:
        raise StageError(
            f"{model_path} is the trained head (cached features in, not images); pass --model "
            f"{model_path.with_name('classifier.keras')}, the exported classifier "
            "(`dvc repro` writes it)"
        )
    layers = {layer.name for layer in model.layers}
    shapes = [tuple(tensor.shape) for tensor in (*model.inputs, *model.outputs)]
    classes = class_names(model)
    if (
        "resize" not in layers
        or classes is None
        or len(shapes) != 2
        or len(shapes[0]) != 4
        or shapes[0][-1] != 3
        or len(shapes[1]) != 2
        or shapes[1][-1] != len(classes)
    ):
        raise StageError(
            f"{model_path} is not a classifier exported by this project (inputs and outputs {shapes}, "
            f"{'a' if 'resize' in layers else 'no'} resize layer, {'no' if classes is None else 'its'} class names); "
            "pass the models/classifier.keras that `dvc repro` writes"
        )
    return classes


def _check_classes(model_path: Path, classes: list[str], classes_path: Path, given: list[str]) -> None:
    """A class list given beside the model must name the model's own classes, in its order."""
    if given == classes:
        return
    if len(given) != len(classes):
        difference = f"names {len(given)} classes, the model gives {len(classes)} class probabilities"
    else:
        row = next(i for i, (a, b) in enumerate(zip(given, classes, strict=True)) if a != b)
        difference = f"names output {row} {given[row]!r}, the model {classes[row]!r}"
    raise StageError(
        f"{classes_path} {difference}: it belongs to another export of {model_path}; leave it out (the model holds "
        "its class names) or export both again with `dvc repro`"
    )


def _check_model_file(model_path: Path) -> None:
    """A file Keras can load is a zip (.keras) or an HDF5 file (legacy .h5); for anything else Keras answers
    "File not found", which misleads about a file that is there."""
    import zipfile

    with open(model_path, "rb") as file:
        head = file.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n") or zipfile.is_zipfile(model_path):
        return
    what = "an empty file (0 bytes)" if not head else f"no Keras model file (it starts {head!r})"
    raise StageError(
        f"{model_path} is not a Keras model file: it is {what}; pass --model the models/classifier.keras that "
        "`dvc repro` writes"
    )


def load_classifier(model_path: Path, classes_path: Path | None = None):
    """The exported classifier, its class names (from the model; a class list given as classes_path must agree)
    and its input size."""
    model_path = Path(model_path)
    for path in (model_path, classes_path):
        if path is not None and not Path(path).is_file():
            raise StageError(
                f"{path} not found; run `dvc repro` in {PROJECT} to train and export the classifier, or pass --model"
            )
    given = _read_classes(Path(classes_path)) if classes_path is not None else None
    _check_model_file(model_path)
    keras = devices.use("tensorflow")
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as error:  # a damaged or foreign file (or an export from before the classes were inside)
        raise StageError(
            f"{model_path} is not a classifier exported by this project ({str(error).splitlines()[0][:200]}); "
            "export it again with `dvc repro`"
        ) from None
    classes = _check_exported(model, model_path)
    if given is not None and classes_path is not None:
        _check_classes(model_path, classes, Path(classes_path), given)
    return model, classes, model.get_layer("resize").height


def _files_below(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """(file, None) for the files below a folder in sorted order (as sorted(folder.rglob("*")) gives them), one
    folder listed at a time, and (path, why) for an entry that cannot be read (a link cycle, a folder without
    permission): reported, and the rest still classified. Links to folders are not followed."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        yield folder, f"cannot read this folder ({error.strerror or error})"
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file()
        except OSError as error:
            yield Path(entry.path), f"cannot read this entry ({error.strerror or error})"
            continue
        if is_dir:
            yield from _files_below(Path(entry.path))
        elif is_file:
            yield Path(entry.path), None


def _inputs(paths: Iterable[Path]) -> Iterator[tuple[Path, Path | None, str | None]]:
    """(file, the folder it was found in or None, None); (folder, folder, None) after each folder's last file;
    (path, None, why) for a folder or an entry in one that cannot be read. A path met twice (named twice, or named
    and inside a folder named too) comes once: the JSON document has one key per path."""
    seen: set[str] = set()
    for path in map(Path, paths):
        if str(path) in seen:
            continue
        seen.add(str(path))
        if path.is_dir():
            unreadable = repeated = False
            for file, problem in _files_below(path):
                unreadable = unreadable or (problem is not None and file == path)
                if file != path and str(file) in seen:  # (the folder itself is named when it cannot be read)
                    repeated = True
                    continue
                seen.add(str(file))
                yield file, (None if problem else path), problem
            if not unreadable and not repeated:  # said once: not also "no image files"
                yield path, path, None
        else:
            yield path, None, None


def classify(model, classes: list[str], image_size: int, paths: Iterable[Path], top: int):
    """Yield (path, [(label, probability), ...], None) per image and (path, None, reason) per problem, decoding
    BATCH_SIZE images at a time."""
    import numpy as np

    batch = np.empty((BATCH_SIZE, image_size, image_size, 3), np.uint8)
    names: list[str] = []
    found: set[Path | None] = set()  # folders that held at least one image file (None: files named alone)

    def predict_batch():
        probabilities = np.asarray(model.predict_on_batch(batch[: len(names)]))
        for path, row in zip(names, probabilities, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            yield path, [(classes[i], float(row[i])) for i in best], None
        names.clear()

    for path, folder, problem in _inputs(paths):
        if problem is not None:
            yield str(path), None, problem
            continue
        if path == folder:  # the end of a folder
            if folder not in found:
                yield str(folder), None, EMPTY
            continue
        try:
            batch[len(names)] = load_image(path, image_size)
        except ImageError as error:
            # In a folder, files that are no image at all (notes, .DS_Store) are not the user's images.
            if folder is None or str(error) != NOT_AN_IMAGE or path.suffix.lower() in SUFFIXES:
                found.add(folder)
                yield str(path), None, str(error)
            continue
        found.add(folder)
        names.append(str(path))
        if len(names) == BATCH_SIZE:
            yield from predict_batch()
    if names:
        yield from predict_batch()


def main(paths: list[Path], model_path: Path, top: int, as_json: bool, classes_path: Path | None = None) -> None:
    document = JsonDocument() if as_json else None
    failed = False
    try:
        if top < 1:
            raise StageError(f"--top must be at least 1, got {top}")
        model, classes, image_size = load_classifier(model_path, classes_path)
        used = which(model, model_path)
        if document:
            document.start(used)
        else:
            print(f"predict: {used['path']}: {used['kind']}", file=sys.stderr, flush=True)
        for path, ranked, reason in classify(model, classes, image_size, paths, min(top, len(classes))):
            path = printable(path)
            if ranked is None:
                failed = True
                print(f"error: {path}: {reason}", file=sys.stderr, flush=True)
                if document:
                    document.errors[path] = reason
            elif document:
                document.result(path, ranked)
            else:
                print(path)
                print("\n".join(f"{label}\t{probability:.4f}" for label, probability in ranked), flush=True)
    except (StageError, KeyboardInterrupt) as error:
        if document:
            document.close(fatal=str(error) if isinstance(error, StageError) else "interrupted")
        raise
    if document:
        document.close()
    if failed:
        raise SystemExit(1)


def cli() -> None:
    """The `predict` console script."""
    parser = argparse.ArgumentParser(description="Classify images with the exported classifier.")
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help=f"exported classifier (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--classes",
        type=Path,
        help="a classes.json to check against the class names inside the model (refused when they differ)",
    )
    parser.add_argument("--top", type=int, default=5, help="how many classes to print per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args()
    run(lambda: main(args.images, args.model, args.top, args.json, args.classes))


if __name__ == "__main__":
    cli()
