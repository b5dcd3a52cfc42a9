"""The backbone alone on in-memory tensors: the ceiling for the features stage's images/s.

Builds the extractor and its compiled function exactly as stages/features.py does (same device choice,
mixed precision on a GPU, same batch shapes: full batches, then each part's shorter last batch), and
times it from the first call (its trace included, as in the stage's own timer) to the last result on
the host. The end-to-end figure to compare with is the stage's log line, `features: N images in S s`.

    python -m benchmarks.throughput --image-size 128 --batch-size 64 --parts 1280 320 400

Prints one JSON line: device, import and build seconds, model_only_img_s (first call included) and
model_only_steady_img_s (full batches after the first: no tracing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def batch_sizes(part_sizes: list[int], batch_size: int) -> list[int]:
    """The batch lengths the features stage feeds the model: each part in full batches, then its rest."""
    sizes = []
    for n in part_sizes:
        sizes += [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return sizes


def model_only(backbone: str, weights: str | None, image_size: int, batch_size: int, part_sizes: list[int]) -> dict:
    """Time the compiled extractor over in-memory batches shaped like the stage's; returns figures as a dict."""
    import tensorflow as tf

    from stages.backbones import build_extractor, use_device

    start = time.perf_counter()
    device = use_device()
    model = build_extractor(backbone, weights, image_size)
    try:
        from stages.features import compile_extractor
    except ImportError:  # a copy of the stages from before compile_extractor existed (benchmark --code)
        extract_batch = tf.function(
            lambda x: tf.cast(model(x, training=False), tf.float32),
            jit_compile=device.startswith("GPU"),
            reduce_retracing=True,
        )
    else:
        extract_batch = compile_extractor(model, device, batch_size)
    # Made on the device the model runs on (a GPU if any), so no copy is timed: the model alone.
    images = tf.random.uniform((batch_size, image_size, image_size, 3), 0, 255, seed=0)
    built = time.perf_counter()
    sizes, seconds = batch_sizes(part_sizes, batch_size), []
    for n in sizes:
        t0 = time.perf_counter()
        extract_batch(images[:n]).numpy()
        seconds.append(time.perf_counter() - t0)
    done = time.perf_counter()
    total = sum(sizes)
    # Steady state: full batches after the first (short batches may trace again, the first one always does).
    full = [t for n, t in zip(sizes, seconds, strict=True) if n == batch_size][1:]
    steady = batch_size * len(full) / sum(full) if full else None
    return {
        "device": device,
        "build_s": built - start,
        "images": total,
        "batch_size": batch_size,
        "image_size": image_size,
        "first_call_s": seconds[0],
        "model_only_s": done - built,
        "model_only_img_s": total / (done - built),
        "model_only_steady_img_s": steady,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--weights", default="none", help="imagenet, none (random init: same speed) or a file")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--parts", type=int, nargs="+", default=[1024], help="image count of each split part")
    args = parser.parse_args()

    import psutil

    born = psutil.Process().create_time()
    import keras  # noqa: F401  (imports TensorFlow: the fixed start-up cost of every stage that uses it)
    import tensorflow as tf

    imported = time.time() - born
    weights = None if args.weights.lower() in ("none", "null") else args.weights
    result = model_only(args.backbone, weights, args.image_size, args.batch_size, args.parts)
    result.update(import_s=imported, tensorflow=tf.__version__)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
