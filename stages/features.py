"""Stage 4: run the frozen backbone once over every image and cache the pooled features.

Images stream through a tf.data pipeline (parallel decode and bilinear resize, prefetch) into one
compiled function, batch by batch; features go straight into memory-mapped .npy files, so memory does
not grow with the dataset. Writes data/features/<part>/{features,labels}.npy and classes.json.
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


def write_features(extract_batch, batches, n_images: int, n_features: int, out: Path, desc: str) -> None:
    """Run every batch through the model and stream the features into out (an .npy memory map)."""
    import tensorflow as tf
    from tqdm import tqdm

    features = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n_images, n_features))
    done = 0
    with tqdm(total=n_images, desc=desc, unit="img", file=sys.stderr) as bar:
        try:
            for batch in batches:
                result = extract_batch(batch).numpy()
                features[done : done + len(result)] = result
                done += len(result)
                bar.update(len(result))
        except tf.errors.InvalidArgumentError as error:
            raise StageError(f"an image failed to decode ({error.message.splitlines()[0]}); rerun `dvc repro extract`") from None
    features.flush()
    del features


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

    import tensorflow as tf

    from stages.backbones import build_extractor, use_device

    device = use_device()
    model = build_extractor(config.backbone, config.weights, config.image_size)
    n_features = model.output_shape[-1]
    # One compiled graph for every full batch (XLA on the GPU); float32 out even under mixed precision.
    extract_batch = tf.function(
        lambda images: tf.cast(model(images, training=False), tf.float32),
        jit_compile=device.startswith("GPU"),
        reduce_retracing=True,
    )
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
