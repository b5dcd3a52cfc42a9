"""Stage 4: run the frozen backbone once over every image and cache the pooled features.

Runs on the Keras backend named by features.backend (TensorFlow, JAX or PyTorch), on its GPU when it has one
(mixed precision), else on the CPU (deterministic). A thread pool decodes and resizes images with the shared
decoder (stages/images.py) a few batches ahead of the model, which is compiled once for the backend; features
are appended to the .npy files as they come, so memory does not grow with the dataset.
Writes data/features/<part>/{features,labels}.npy and classes.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from stages import backend, params
from stages.common import StageError, atomic_output, run, write_json
from stages.feature_cache import PARTS
from stages.images import ImageError, load_image


def read_manifests(split_dir: Path) -> dict[str, pd.DataFrame]:
    manifests = {}
    for part in PARTS:
        path = Path(split_dir) / f"{part}.csv"
        if not path.is_file():
            raise StageError(f"{path} not found; run `dvc repro split` first")
        manifests[part] = pd.read_csv(path, dtype=str, keep_default_na=False)
    return manifests


def _decode_batch(paths: list[str], image_size: int) -> np.ndarray:
    batch = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for row, path in enumerate(paths):
        try:
            batch[row] = load_image(path, image_size)
        except ImageError as error:
            raise StageError(
                f"{path}: {error}. The extract stage kept it with the same decoder, so the file has changed "
                "since: run `dvc checkout data/images` to restore it, or `dvc repro -f extract` to re-extract"
            ) from None
    return batch


def image_batches(paths: list[str], image_size: int, batch_size: int, workers: int | None = None) -> Iterator[np.ndarray]:
    """uint8 (n, image_size, image_size, 3) batches in the order of `paths`, decoded by a thread pool a few
    batches ahead (Pillow releases the GIL while it decodes and resizes)."""
    workers = workers or min(32, os.cpu_count() or 1)
    chunks = (paths[i:i + batch_size] for i in range(0, len(paths), batch_size))
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.submit(_decode_batch, chunk, image_size))
            if len(pending) > workers + 1:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def compile_extractor(model, backend_name: str, batch_size: int, on_gpu: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The model as one compiled function of a uint8 image batch, giving float32 features on the host.

    Compiled per backend: tf.function (XLA on a GPU), jax.jit, or PyTorch's eager CUDA kernels. A JIT compiles
    once per input shape, so a shorter last batch is padded to batch_size and the padding's rows dropped.
    """
    import keras

    if backend_name == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda x: model(x, training=False), jit_compile=on_gpu, reduce_retracing=True)
        pad = on_gpu
    elif backend_name == "jax":
        import jax

        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        stateless = jax.jit(lambda trainable, frozen, x: model.stateless_call(trainable, frozen, x, training=False)[0])
        compiled, pad = (lambda x: stateless(*state, x)), True
    else:
        import torch

        def compiled(x):
            with torch.inference_mode():
                return model(x, training=False)

        pad = False

    def extract_batch(images: np.ndarray) -> np.ndarray:
        n = len(images)
        if pad and n < batch_size:
            images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
        return np.asarray(keras.ops.convert_to_numpy(compiled(images)), dtype=np.float32)[:n]

    return extract_batch


def write_features(extract_batch, batches, n_images: int, n_features: int, out: Path, desc: str) -> None:
    """Run every batch through the model and append its rows to out, a float32 (n_images, n_features) .npy
    file: the same bytes as np.save, written as they come, so memory stays flat however many images."""
    from tqdm import tqdm

    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n_images, n_features)}
    with open(out, "wb") as file, tqdm(total=n_images, desc=desc, unit="img", file=sys.stderr) as bar:
        np.lib.format.write_array_header_1_0(file, header)
        for batch in batches:
            rows = np.ascontiguousarray(extract_batch(batch), dtype=np.float32)
            file.write(rows.data)
            bar.update(len(rows))
    if bar.n != n_images:
        raise StageError(f"{out}: wrote {bar.n} feature rows for {n_images} images")


def extract_features(images_dir: Path, split_dir: Path, features_dir: Path, config: params.FeaturesParams) -> dict:
    manifests = read_manifests(split_dir)
    classes = sorted(manifests["train"]["label"].unique())
    index = {label: i for i, label in enumerate(classes)}
    for part, frame in manifests.items():
        unknown = set(frame["label"]) - set(index)
        if unknown:
            raise StageError(f"{split_dir}/{part}.csv has labels missing from train.csv: {sorted(unknown)[:5]}")

    backend.use(config.backend)
    from stages.backbones import build_extractor

    device = backend.prepare_device(config.backend)
    model = build_extractor(config.backbone, config.weights, config.image_size)  # weights checked before any image
    n_features = model.output_shape[-1]
    extract_batch = compile_extractor(model, config.backend, config.batch_size, device.startswith("GPU"))
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
