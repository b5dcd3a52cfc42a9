"""Will the audit fit in memory? Checked from the cache's shape before any feature is read, as train checks its head
(transfer/head/memory.py); both read the memory on offer in transfer/core/machine_memory.py.

The features dominate: n x d float32 values as loaded, the centred copy the nearest-neighbour search reads, and the
copies the cross-validation makes of a fold (its rows, then standardised). Fitted to the peak resident memory
measured at 8,677 and at 17,354 images x 2,048 features (benchmarks/results/audit_cpu.json, audit_cpu_double.json):
549 and 886 MB: about 210 MB (the imports) plus 4.7 times the features' size.
"""

from __future__ import annotations

from transfer.audit.duplicates import NEIGHBOURS
from transfer.core.errors import StageError
from transfer.core.machine_memory import GIB, MIB, available_memory, current_usage

# Copies of the float32 feature matrix's size alive at the peak (measured 4.7; the rest is margin).
COPIES = 6
# What is allocated beyond the copies and after the check: scikit-learn's, cleanlab's and matplotlib's imports
# (about 100 MB measured on top of what the stage holds when it checks) and the fold's model.
OVERHEAD = 200 * MIB


def estimate(n_images: int, n_features: int) -> int:
    """Bytes the audit needs beyond what the process holds when it checks."""
    neighbours = n_images * NEIGHBOURS * 16  # each image's nearest: an int64 index and a float64 distance
    return OVERHEAD + COPIES * 4 * n_images * n_features + neighbours


def check_fits(n_images: int, n_features: int, offer=None) -> None:
    """Raise a StageError saying what the audit needs and what to do, when that is more than the machine offers."""
    offer = offer or available_memory()
    if offer is None:
        return
    available, source = offer
    need = estimate(n_images, n_features)
    if need <= available:
        return
    raise StageError(
        f"the audit of {n_images:,} images x {n_features:,} features would need about {need / GIB:.1f} GiB more "
        f"memory, but {available / GIB:.1f} GiB is available ({source}; {current_usage() / GIB:.1f} GiB already "
        "held by this process). Free memory or run it on a larger machine; no other stage needs the audit, so "
        "`dvc repro evaluate` and `dvc repro export` still run without it"
    )
