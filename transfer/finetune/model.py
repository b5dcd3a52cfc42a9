"""The model fine-tuning trains: the backbone with its top blocks unfrozen, behind the trained head.

As in Keras' guide (keras-io guides/transfer_learning.py): warm start from the head trained on the cached features
(a random head's large gradients would wreck the unfrozen weights), the backbone called with training=False and every
BatchNormalization layer frozen, so its statistics and scale stay those of ImageNet (keras-io's EfficientNet
fine-tuning example does the same). The head's Dropout still drops while training.
"""

from __future__ import annotations

import re

from transfer.core import params
from transfer.core.errors import StageError

# A block of each keras.applications backbone, from its layer names: ResNet conv5_block3_*, EfficientNetV2
# block6h_*, MobileNetV3 expanded_conv_14_*, ConvNeXt *_stage_3_block_2_*. Layers between blocks (a stem, the
# final conv_1 or top_conv) belong to the block before them.
BLOCK = re.compile(r"conv\d_block\d+|block\d+[a-z]|expanded_conv(?:_\d+)?|stage_\d+_block_\d+")


def backbone_of(extractor):
    """The keras.applications model inside the extractor (transfer.features.backbones.build_extractor)."""
    import keras

    return next(layer for layer in extractor.layers if isinstance(layer, keras.Model))


def blocks(base) -> list[tuple[str, list]]:
    """The backbone's layers grouped into its blocks, bottom to top; the layers before the first block are "stem"."""
    grouped: list[tuple[str, list]] = [("stem", [])]
    for layer in base.layers:
        match = BLOCK.search(layer.name)
        if match and match.group() != grouped[-1][0]:
            grouped.append((match.group(), []))
        grouped[-1][1].append(layer)
    return grouped


def unfreeze_top(extractor, head, unfreeze: int) -> list[str]:
    """Make the top `unfreeze` blocks of the backbone and the head trainable, every BatchNormalization and
    everything else frozen; the names of the unfrozen blocks."""
    import keras

    base = backbone_of(extractor)
    grouped = blocks(base)
    if unfreeze > len(grouped) - 1:
        raise StageError(
            f"finetune.unfreeze is {unfreeze} but {base.name} has {len(grouped) - 1} blocks; set at most that"
        )
    chosen = grouped[len(grouped) - unfreeze :] if unfreeze else []
    extractor.trainable = base.trainable = True
    for layer in extractor.layers:
        if layer is not base:
            layer.trainable = False  # the fixed preprocessing
    trainable = {id(layer) for _, layers in chosen for layer in layers}
    for layer in base.layers:
        layer.trainable = id(layer) in trainable and not isinstance(layer, keras.layers.BatchNormalization)
    for layer in head.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    return [name for name, _ in chosen]


def build(features: params.FeaturesParams, config: params.FinetuneParams, head):
    """(the model to train: uint8 images at features.image_size in, probabilities out; its extractor part; the
    names of the unfrozen blocks), compiled with Adam at finetune.learning_rate."""
    import keras

    from transfer.features.backbones import build_extractor

    extractor = build_extractor(features.backbone, features.weights, features.image_size)
    unfrozen = unfreeze_top(extractor, head, config.unfreeze)
    images = keras.Input((features.image_size, features.image_size, 3), name="images")
    model = keras.Model(images, head(extractor(images)), name="finetune")
    compile_for_training(model, config.learning_rate)
    return model, extractor, unfrozen


def compile_for_training(model, learning_rate: float) -> None:
    """Adam at learning_rate on the cross-entropy, averaged over the sample weights: a short last batch is padded
    with rows of weight 0 (loop.padded), which then count for nothing."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"),
        weighted_metrics=["accuracy"],  # `metrics` would count the padding's rows too
    )
    model.optimizer.build(model.trainable_variables)  # its state exists from the start: a checkpoint restores it
