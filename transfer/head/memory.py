"""Will the dense head's training fit in memory? Checked before Keras builds it, as the features stage checks its
own peak (transfer/features/memory.py); both read the memory on offer in transfer/core/machine_memory.py.

The weights dominate: n_features x hidden_units of them, each held as the weight, its gradient and Adam's two
moments, with a copy saved at the end; a batch's activations add batch x (n_features + hidden_units) values.
"""

from __future__ import annotations

from transfer.core.errors import StageError
from transfer.core.machine_memory import GIB, MIB, available_memory, current_usage

# float32 copies of each weight alive while training: the weight, its gradient, Adam's two moments, the saved copy.
COPIES = 5
# Values alive per batch row and feature or unit: inputs, BatchNorm and Dropout outputs, their gradients.
ACTIVATIONS = 8
# TensorFlow's own allocations for the training step (graph, kernels), beyond what is resident before it.
OVERHEAD = 300 * MIB


def weights(n_features: int, n_classes: int, hidden_units: int) -> int:
    """The dense head's parameters: two BatchNormalization layers (4 each per unit) and two Dense layers."""
    return 4 * n_features + (n_features + 1) * hidden_units + 4 * hidden_units + (hidden_units + 1) * n_classes


def estimate(n_features: int, n_classes: int, hidden_units: int, batch: int) -> int:
    """Bytes the dense head's training needs beyond what the process holds before it."""
    held = COPIES * 4 * weights(n_features, n_classes, hidden_units)
    return OVERHEAD + held + ACTIVATIONS * 4 * batch * (n_features + hidden_units + n_classes)


def check_fits(config, n_features: int, n_classes: int, n_train: int, offer=None) -> None:
    """Raise a StageError naming train.hidden_units (and train.batch_size) with values that fit, when the dense
    head would need more memory than is on offer (TrainParams config; no batch holds more than n_train rows)."""
    offer = offer or available_memory()
    if config.head != "dense" or offer is None:
        return
    available, source = offer
    batch = min(config.batch_size, n_train)
    need = estimate(n_features, n_classes, config.hidden_units, batch)
    if need <= available:
        return
    fixes = []
    low, high = 0, config.hidden_units  # the widest head that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if estimate(n_features, n_classes, middle, batch) <= available else (low, middle - 1)
    if low:
        fixes.append(f"train.hidden_units to {low} or less")
    if estimate(n_features, n_classes, config.hidden_units, 1) <= available:
        fixes.append("a smaller train.batch_size")
    advice = " or ".join(fixes) or "a smaller train.hidden_units (the features alone fill the memory)"
    raise StageError(
        f"train.hidden_units {config.hidden_units} with train.batch_size {config.batch_size} would need about "
        f"{need / GIB:.1f} GiB more memory for the dense head ({n_features:,} features x "
        f"{config.hidden_units:,} units: weights, gradients and Adam's moments), but {available / GIB:.1f} GiB is "
        f"available ({source}; {current_usage() / GIB:.1f} GiB already held by this process); set {advice}"
    )
