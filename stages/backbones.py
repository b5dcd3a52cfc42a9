"""The frozen backbones and how images reach them: one definition shared by features, export and predict."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import ops

# Seeds the random initialisation when features.weights is null, so test runs are reproducible.
RANDOM_INIT_SEED = 1234
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    constructor: str  # the keras.applications class
    preprocess: str  # "caffe": RGB->BGR minus ImageNet mean; "tf": scale to [-1, 1]; "none": built into the model


BACKBONES = {
    "resnet50": Backbone("ResNet50", "caffe"),
    "resnet101": Backbone("ResNet101", "caffe"),
    "resnet50v2": Backbone("ResNet50V2", "tf"),
    "efficientnetv2b0": Backbone("EfficientNetV2B0", "none"),
    "mobilenetv3large": Backbone("MobileNetV3Large", "none"),
    "convnexttiny": Backbone("ConvNeXtTiny", "none"),
}


@keras.saving.register_keras_serializable(package="transfer_learning")
class Preprocess(keras.layers.Layer):
    """The backbone's own preprocess_input as a layer, so the exported classifier takes raw RGB pixels."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def build_extractor(name: str, weights: str | None, image_size: int) -> keras.Model:
    """Preprocessing plus the frozen backbone with global average pooling: images in, pooled features out."""
    spec = BACKBONES[name]
    keras.utils.set_random_seed(RANDOM_INIT_SEED)
    base = getattr(keras.applications, spec.constructor)(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg"
    )
    base.trainable = False
    images = keras.Input((image_size, image_size, 3), name="images")
    features = base(Preprocess(spec.preprocess)(images), training=False)
    return keras.Model(images, features, name=f"{name}_features")


def decode_image(path: tf.Tensor, image_size: int | None = None) -> tf.Tensor:
    """Read any JPEG/PNG/GIF/BMP/WebP as 3-channel RGB (grayscale, CMYK, RGBA and 16-bit included);
    resize bilinearly to image_size x image_size when given."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    if image_size is None:
        return image
    return tf.image.resize(image, (image_size, image_size), method="bilinear")


def use_device() -> str:
    """Pick the device: on a GPU, mixed precision (several times faster); on the CPU, deterministic ops."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU ({details.get('device_name', gpus[0].name)}, mixed precision)"
    tf.config.experimental.enable_op_determinism()
    return "CPU"


def seed_everything(seed: int) -> None:
    """Same params, same bytes: seed Python, NumPy and TensorFlow and make TF's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
