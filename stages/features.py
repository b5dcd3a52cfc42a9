"""Stage 4: run the frozen backbone once over every image and cache the pooled features.

Images stream through a tf.data pipeline (parallel decode and bilinear resize, prefetch) into one compiled
function, batch by batch (on a GPU: XLA and mixed precision, compiled once); features are appended to the
.npy files as they come, so memory does not grow with the dataset.
Writes data/features/<part>/{features,labels}.npy and classes.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stages import params
from stages.common import StageError, atomic_output, run, write_json

PARTS = ("train", "val", "test")


def read_manifests(split_dir: Path) -> dict[str, pd.DataFrame]:
    manifests = {}
    for part in PARTS:
        path = Path(split_dir) / f"{part}.csv"
        if not path.is_file():
            raise StageError(f"{path} not found; run `dvc repro split` first")
        manifests[part] = pd.read_csv(path, dtype=str, keep_default_na=False)
    return manifests


def image_batches(paths: list[str], image_size: int, batch_size: int):
    """A tf.data pipeline of resized float32 image batches, in the order of `paths`."""
    import tensorflow as tf

    from stages.backbones import decode_image

    return (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(lambda path: decode_image(path, image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def compile_extractor(model, device: str, batch_size: int):
    """The model as one compiled function of an image batch, giving float32 features (also under mixed
    precision). GPU: XLA, compiled for batch_size only: a shorter last batch is padded to it and the padding's
    rows dropped, since every new shape would cost a full XLA compile."""
    import tensorflow as tf

    def features(images):
        return tf.cast(model(images, training=False), tf.float32)

    if not device.startswith("GPU"):
        return tf.function(features, reduce_retracing=True)
    shape = (batch_size, *model.input_shape[1:])
    compiled = tf.function(features, jit_compile=True, input_signature=[tf.TensorSpec(shape, tf.float32)])

    def extract_batch(images):
        n = int(images.shape[0])
        if n == batch_size:
            return compiled(images)
        return compiled(tf.pad(images, [[0, batch_size - n], [0, 0], [0, 0], [0, 0]]))[:n]

    return extract_batch


def write_features(extract_batch, batches, n_images: int, n_features: int, out: Path, desc: str) -> None:
    """Run every batch through the model and append its rows to out, a float32 (n_images, n_features) .npy
    file: the same bytes as np.save, written as they come, so memory stays flat however many images."""
    import tensorflow as tf
    from tqdm import tqdm

    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n_images, n_features)}
    with open(out, "wb") as file, tqdm(total=n_images, desc=desc, unit="img", file=sys.stderr) as bar:
        np.lib.format.write_array_header_1_0(file, header)
        try:
            for batch in batches:
                rows = np.ascontiguousarray(extract_batch(batch).numpy(), dtype=np.float32)
                file.write(rows.data)
                bar.update(len(rows))
        except tf.errors.InvalidArgumentError as error:
            message = error.message.splitlines()[0]
            raise StageError(f"an image failed to decode ({message}); rerun `dvc repro extract`") from None
    if bar.n != n_images:
        raise StageError(f"{out}: wrote {bar.n} feature rows for {n_images} images")


def load_part(features_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(features_dir) / part
    try:
        return np.load(folder / "features.npy"), np.load(folder / "labels.npy")
    except FileNotFoundError:
        raise StageError(f"{folder} has no cached features; run `dvc repro features` first") from None


def load_classes(features_dir: Path) -> list[str]:
    path = Path(features_dir) / "classes.json"
    if not path.is_file():
        raise StageError(f"{path} not found; run `dvc repro features` first")
    return json.loads(path.read_text(encoding="utf-8"))


def extract_features(images_dir: Path, split_dir: Path, features_dir: Path, config: params.FeaturesParams) -> dict:
    manifests = read_manifests(split_dir)
    classes = sorted(manifests["train"]["label"].unique())
    index = {label: i for i, label in enumerate(classes)}
    for part, frame in manifests.items():
        unknown = set(frame["label"]) - set(index)
        if unknown:
            raise StageError(f"{split_dir}/{part}.csv has labels missing from train.csv: {sorted(unknown)[:5]}")

    from stages.backbones import build_extractor, use_device

    device = use_device()
    model = build_extractor(config.backbone, config.weights, config.image_size)
    n_features = model.output_shape[-1]
    extract_batch = compile_extractor(model, device, config.batch_size)
    print(f"features: {config.backbone} ({n_features}-d) at {config.image_size}px on {device}", file=sys.stderr)

    start, total = time.perf_counter(), sum(map(len, manifests.values()))
    with atomic_output(Path(features_dir)) as tmp:
        for part, frame in manifests.items():
            (tmp / part).mkdir(parents=True)
            paths = [str(Path(images_dir) / p) for p in frame["path"]]
            batches = image_batches(paths, config.image_size, config.batch_size)
            write_features(extract_batch, batches, len(paths), n_features, tmp / part / "features.npy", part)
            np.save(tmp / part / "labels.npy", frame["label"].map(index).to_numpy(np.int32))
        write_json(tmp / "classes.json", classes)
    seconds = time.perf_counter() - start
    print(f"features: {total} images in {seconds:.1f} s ({total / seconds:.0f} img/s) on {device}")
    return {"images": total, "seconds": seconds, "device": device, "n_features": n_features}


def main(images_dir: Path, split_dir: Path, features_dir: Path) -> None:
    extract_features(images_dir, split_dir, features_dir, params.load().features)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir", type=Path, help="class folders of images (data/images)")
    parser.add_argument("split_dir", type=Path, help="train/val/test manifests (data/split)")
    parser.add_argument("features_dir", type=Path, help="where the cached features are written (data/features)")
    args = parser.parse_args()
    run(lambda: main(args.images_dir, args.split_dir, args.features_dir))
