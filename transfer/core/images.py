"""The one definition of "the pixels of this file", shared by extract, features, export and predict.

An image is what Pillow gives for its first frame, turned upright by its EXIF orientation as viewers
show it, converted to 8-bit RGB: `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`. Resizing to
the backbone's input is Pillow's bilinear filter (antialiased when shrinking). Nothing here imports a
deep-learning framework, so every backend sees the same uint8 arrays.
"""

from __future__ import annotations

import os
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps
from tqdm import tqdm

# What Pillow decodes fully and viewers show: MPO is the multi-picture JPEG that phones and cameras write.
SUPPORTED_FORMATS = ("BMP", "GIF", "JPEG", "MPO", "PNG", "TIFF", "WEBP")
SUFFIXES = (".bmp", ".gif", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".tif", ".tiff", ".webp")


class ImageError(Exception):
    """A file that is not a usable image; the message says why (without the path)."""


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _regular_file(path: Path):
    """`path` opened for reading if it is a regular file. Anything else is refused without being read: opening a
    FIFO waits for a writer forever, and a device such as /dev/zero never ends. O_NONBLOCK: the open itself cannot
    wait; fstat then tells what was opened (no gap between a check and the open)."""
    file = open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK))  # noqa: SIM115
    try:
        mode = os.fstat(file.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
            raise ImageError(f"not a regular file ({kind}), so it is not read")
        os.set_blocking(file.fileno(), True)
        return file
    except BaseException:
        file.close()
        raise


def _open_upright(path: Path) -> Image.Image:
    with _regular_file(path) as file, Image.open(file) as image:
        if image.format not in SUPPORTED_FORMATS:
            raise ImageError(f"{image.format} is not a supported format ({', '.join(SUPPORTED_FORMATS)})")
        image.seek(0)  # first frame of an animation or a multi-picture file
        upright = ImageOps.exif_transpose(image) if image.getexif().get(ExifTags.Base.Orientation, 1) != 1 else image
        return upright.convert("RGB")  # decodes every pixel: a truncated file fails here


# Fine-tuning's augmentation: a random crop keeping this share of each side or more, then a coin-flip mirror.
CROP_MIN_SIDE = 0.8


def load_image(path: str | Path, size: int | None = None, augment: int | None = None) -> np.ndarray:
    """The RGB pixels of an image file as a uint8 (height, width, 3) array; (size, size, 3) when size is given.

    `augment` (with size), a seed: a random crop of CROP_MIN_SIDE to all of each side, resized to size, mirrored
    left-right half the time, all drawn from that seed alone (so the same seed gives the same pixels in any worker).
    Raises ImageError when the file cannot be decoded fully.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # A decompression-bomb warning is Pillow's, not the user's concern; the hard limit still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open_upright(Path(path))
            if augment is not None:
                if size is None:
                    raise ValueError("load_image: augment needs a size (the crop is resized to it)")
                image = _augmented(image, size, np.random.default_rng(augment))
            elif size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"too large to decode safely: {error}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file (unrecognised content)") from None
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not an image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"not a readable image: {error}") from None
    finally:
        _report(path, caught)
    return np.asarray(image, dtype=np.uint8)


def _augmented(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    side = rng.uniform(CROP_MIN_SIDE, 1.0)
    crop_w, crop_h = max(1, round(width * side)), max(1, round(height * side))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


_reported: set[tuple[str, str]] = set()


def _report(path: str | Path, caught: list[warnings.WarningMessage]) -> None:
    """Pillow's warnings about a file (corrupt EXIF data, ...) say which file, once per process."""
    for warning in caught:
        key = (str(path), str(warning.message))
        if key not in _reported:
            _reported.add(key)
            # tqdm.write: on a line of its own, not glued to a progress bar.
            tqdm.write(f"warning: {path}: {' '.join(str(warning.message).split())}", file=sys.stderr)


def check_image(path: str | Path) -> str | None:
    """Why `path` is not a usable image, or None when it decodes fully (the extract stage's test)."""
    try:
        load_image(path)
    except ImageError as error:
        return str(error)
    return None
