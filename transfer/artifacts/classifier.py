"""The exported classifier: resize, preprocessing, the frozen backbone and the trained head in one Keras model."""

from __future__ import annotations

from transfer.core import params


def build_classifier(head, config: params.FeaturesParams):
    import keras

    from transfer.features.backbones import build_extractor

    extractor = build_extractor(config.backbone, config.weights, config.image_size)
    images = keras.Input((None, None, 3), name="raw_images")
    # Images of any size work; transfer.artifacts.predict resizes with the shared decoder first
    # (transfer/core/images.py), which makes this layer an identity and predictions equal to the cached-feature path.
    resized = keras.layers.Resizing(config.image_size, config.image_size, interpolation="bilinear", name="resize")(
        images
    )
    # training=False pins BatchNorm to its learned statistics inside the combined graph.
    return keras.Model(images, head(extractor(resized), training=False), name="classifier")
