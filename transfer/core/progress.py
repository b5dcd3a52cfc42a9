"""Progress bars: one look for every long step (download, unpacking, checking images, feature extraction)."""

from __future__ import annotations

import sys
from collections.abc import Iterable


def progress(iterable: Iterable | None = None, *, desc: str, unit: str = "it", total: int | None = None, **options):
    """A tqdm bar on stderr (stdout stays for results); unit="B" counts bytes in KiB, MiB, GiB."""
    from tqdm import tqdm

    if unit == "B":
        options.update(unit_scale=True, unit_divisor=1024)
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, **options)
