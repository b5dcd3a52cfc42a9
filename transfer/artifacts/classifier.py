"""The exported classifier: resize, preprocessing, the backbone and the head in one Keras model, built from Keras'
own layers only, with the class names inside, so that `keras.saving.load_model(path)` is all a client needs.

The class names travel as the name of the model's last layer, an Identity: `classes>` then each name
percent-encoded with `.` for `%` (TensorFlow accepts only `[A-Za-z0-9_.>-]` and a few more in a layer name, and Keras
no `/`), joined by `>`. Any Python reads them back without this project:

    [urllib.parse.unquote(name.replace(".", "%")) for name in model.layers[-1].name.split(">")[1:]]
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from transfer.core import params

PREFIX = "classes"
# The model's name says which the pipeline delivered (predict reports it): phase one's or phase two's.
FROZEN, FINETUNED = "classifier", "finetuned_classifier"
KINDS = {FROZEN: "the head on the frozen backbone", FINETUNED: "fine-tuned: the top backbone blocks and the head"}


def classes_layer_name(classes: list[str]) -> str:
    encoded = (quote(name, safe="").replace(".", "%2E").replace("~", "%7E").replace("%", ".") for name in classes)
    return ">".join([PREFIX, *encoded])


def class_names(model) -> list[str] | None:
    """The class names a classifier carries in its last layer's name, or None for a model without them."""
    parts = model.layers[-1].name.split(">") if model.layers else []
    if len(parts) < 2 or parts[0] != PREFIX:
        return None
    return [unquote(part.replace(".", "%")) for part in parts[1:]]


def build_classifier(head, config: params.FeaturesParams, classes: list[str], extractor=None, name=FROZEN):
    """Raw RGB images of any size in, class probabilities out; `extractor` (default: the frozen backbone that
    features.* names) turns images at features.image_size into pooled features. `name` says which model it is:
    FROZEN (the head on the frozen backbone) or FINETUNED."""
    import keras

    from transfer.features.backbones import build_extractor

    if extractor is None:
        extractor = build_extractor(config.backbone, config.weights, config.image_size)
    images = keras.Input((None, None, 3), name="raw_images")
    # Images of any size work; transfer.artifacts.predict resizes with the shared decoder first
    # (transfer/core/images.py), which makes this layer an identity and predictions equal to the cached-feature path.
    resized = keras.layers.Resizing(config.image_size, config.image_size, interpolation="bilinear", name="resize")(
        images
    )
    # training=False pins BatchNorm to its learned statistics inside the combined graph.
    probabilities = head(extractor(resized, training=False), training=False)
    named = keras.layers.Identity(name=classes_layer_name(classes))(probabilities)
    return keras.Model(images, named, name=name)
