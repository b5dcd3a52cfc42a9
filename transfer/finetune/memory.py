"""Will fine-tuning fit in memory? The features stage's estimate (transfer/features/memory.py) with the activations
that training keeps for the backward pass, the gradients and Adam's moments.

Measured with `python -m benchmarks.finetune` (resnet50, 128 px, batch 16, TensorFlow CPU;
benchmarks/results/finetune_cpu.json), the growth over the built model against inference's: 1.7x with the top block
trainable, 2.4x with three, 15x for every layer (BatchNorm training). Rounded up: 3x for up to FEW_BLOCKS blocks,
18x beyond (an estimate between the measured points).
"""

from __future__ import annotations

from transfer.features import memory

TRAINING_PER_PIXEL, MANY_BLOCKS_PER_PIXEL, FEW_BLOCKS = 3.0, 18.0, 3


def check_fits(features, largest_part: int, on_gpu: bool, batch_size: int, unfreeze: int, **machine) -> None:
    """Raise a StageError naming features.image_size / finetune.batch_size and values that fit, when training
    batches of `batch_size` with `unfreeze` blocks trainable would not fit (machine: workers=, offer= as in
    transfer.features.memory.check_fits)."""
    scale = TRAINING_PER_PIXEL if unfreeze <= FEW_BLOCKS else MANY_BLOCKS_PER_PIXEL
    sized = features.model_copy(update={"batch_size": batch_size})
    memory.check_fits(sized, largest_part, on_gpu, batch_key="finetune.batch_size", scale=scale, **machine)
