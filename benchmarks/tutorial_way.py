"""The tutorial's way, for timing: one Keras model (frozen ResNet50 plus the tutorial's head) trained from the JPEGs.

Nothing is cached: every epoch decodes, resizes and runs the frozen backbone over every training and
validation image again, which is what the feature cache of this pipeline avoids. Keras 3 has no
fit_generator or ImageDataGenerator, so images come through tf.data, decoded like transfer/features/backbones.py
(3 channels, bilinear resize), with the tutorial's preprocess_input, shuffled, in batches of 32.
It reads the split stage's manifests, so it sees exactly the images the pipeline sees.

    python benchmarks/tutorial_way.py IMAGES_DIR SPLIT_DIR --image-size 128 --epochs 5 [--weights imagenet]

Standalone on purpose (it imports nothing from this project). The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers


def decode(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """As keras.utils.image_dataset_from_directory does: 3 channels, bilinear resize, float32."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.image.resize(image, (image_size, image_size), method="bilinear")


def dataset(
    images_dir: str,
    manifest: pd.DataFrame,
    classes: list[str],
    image_size: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    paths = [os.path.join(images_dir, path) for path in manifest["path"]]
    labels = manifest["label"].map({name: i for i, name in enumerate(classes)}).to_numpy(np.int32)
    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle:  # the tutorial's generator shuffled the training files every epoch
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    preprocess = keras.applications.resnet50.preprocess_input
    data = data.map(
        lambda path, label: (preprocess(decode(path, image_size)), label), num_parallel_calls=tf.data.AUTOTUNE
    )
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def tutorial_model(image_size: int, n_classes: int, weights: str | None) -> keras.Model:
    """ResNet50 without its top, frozen (the tutorial forgot trainable = False), then the tutorial's head."""
    base = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
    base.trainable = False
    return keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            base,
            layers.GlobalAveragePooling2D(),
            layers.BatchNormalization(),
            layers.Dropout(0.5),
            layers.Dense(512, activation="relu"),
            layers.BatchNormalization(),
            layers.Dropout(0.5),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="tutorial",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir", help="class folders of images")
    parser.add_argument("split_dir", help="train.csv, val.csv and test.csv from the split stage")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weights", default="none", help="imagenet, none (random init: same speed) or a file")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.perf_counter()

    keras.utils.set_random_seed(args.seed)
    manifests = {
        part: pd.read_csv(os.path.join(args.split_dir, f"{part}.csv"), dtype=str, keep_default_na=False)
        for part in ("train", "val", "test")
    }
    classes = sorted(manifests["train"]["label"].unique())
    data = {
        part: dataset(args.images_dir, frame, classes, args.image_size, args.batch_size, part == "train", args.seed)
        for part, frame in manifests.items()
    }
    weights = None if args.weights.lower() in ("none", "null") else args.weights
    model = tutorial_model(args.image_size, len(classes), weights)
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit_start = time.perf_counter()
    history = model.fit(data["train"], validation_data=data["val"], epochs=args.epochs, shuffle=False, verbose=2)
    eval_start = time.perf_counter()
    loss, accuracy = model.evaluate(data["test"], verbose=0)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "test_accuracy": float(accuracy),
                "test_loss": float(loss),
                "val_accuracy": [float(v) for v in history.history["val_accuracy"]],
                "images": {part: len(frame) for part, frame in manifests.items()},
                "epochs": args.epochs,
                "image_size": args.image_size,
                "seconds": {"setup": fit_start - started, "fit": eval_start - fit_start, "evaluate": done - eval_start},
            }
        )
    )


if __name__ == "__main__":
    main()
