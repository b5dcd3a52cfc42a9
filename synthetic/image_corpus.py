"""A corpus of image files in every format and mode people feed an image classifier, with the pixels each
should decode to, for testing the shared decoder (transfer/core/images.py) through every path that reads images.

Each file is written from a known RGB picture, so the expected pixels come from the picture itself (or its
palette), not from the decoder under test; lossy formats carry a tolerance.

    python -m synthetic.image_corpus OUT_DIR     # writes the files and prints their names
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Sample:
    name: str
    expected: np.ndarray  # uint8 (height, width, 3): what a viewer shows
    tolerance: float  # mean absolute difference allowed (0 for lossless files)


def picture(width: int = 48, height: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with a few blocks: not symmetric, so a rotation or a flip shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) * 255 // (width + height)], -1)
    pixels[: height // 3, : width // 4] = rng.integers(0, 256, 3)  # a block in the top-left corner
    return pixels.astype(np.uint8)


def _palette_picture(colours: int, width: int = 48, height: int = 32) -> Image.Image:
    """A palette image using `colours` entries, as a 'P' mode image."""
    rng = np.random.default_rng(colours)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    indices = ((xx // 6 + yy // 4) % colours).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.flatten().tolist() + [0] * (768 - 3 * colours))
    return image


def _rgb_of_palette(image: Image.Image) -> np.ndarray:
    palette = np.array(image.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
    return palette[np.asarray(image)]


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _bmp4_bytes(image: Image.Image) -> bytes:
    """A 4-bit palette BMP (Pillow writes palettes as 8-bit only): headers, 16-entry BGRX palette, rows of
    two pixels a byte, bottom row first, each padded to 4 bytes."""
    indices = np.asarray(image)
    height, width = indices.shape
    row_bytes = ((width + 1) // 2 + 3) // 4 * 4
    rows = bytearray()
    for row in indices[::-1]:
        padded = np.append(row, 0) if width % 2 else row
        packed = (padded[0::2] << 4 | padded[1::2]).astype(np.uint8).tobytes()
        rows += packed + bytes(row_bytes - len(packed))
    palette = np.array(image.getpalette()[:48], dtype=np.uint8).reshape(16, 3)
    table = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    offset = 14 + 40 + len(table)
    info = np.array([40, width, height], "<i4").tobytes() + np.array([1, 4], "<u2").tobytes()
    info += np.array([0, len(rows), 2835, 2835, 16, 0], "<u4").tobytes()
    header = b"BM" + np.array([offset + len(rows), 0, offset], "<u4").tobytes()
    return header + info + table + bytes(rows)


def _mpo_bytes(first: np.ndarray, second: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(first).save(buffer, "MPO", save_all=True, append_images=[Image.fromarray(second)], quality=95)
    return buffer.getvalue()


def make_corpus(folder: Path) -> list[Sample]:
    """Write every sample into `folder`; return what each should decode to."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = picture()
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    gray_rgb = np.repeat(gray[..., None], 3, axis=-1)
    samples: list[Sample] = []

    def save(name: str, image: Image.Image, expected: np.ndarray, tolerance: float = 0.0, **options) -> None:
        image.save(folder / name, **options)
        samples.append(Sample(name, expected, tolerance))

    # JPEG: baseline, progressive, grayscale, CMYK (Photoshop's kind), multi-picture (phones), EXIF-rotated.
    save("baseline.jpg", Image.fromarray(rgb), rgb, 4.0, quality=95)
    save("progressive.jpg", Image.fromarray(rgb), rgb, 4.0, quality=95, progressive=True)
    save("grayscale.jpg", Image.fromarray(gray), gray_rgb, 3.0, quality=95)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    save("cmyk.jpg", cmyk, np.asarray(cmyk.convert("RGB")), 4.0, quality=95)
    (folder / "multi_picture.jpg").write_bytes(_mpo_bytes(rgb, 255 - rgb))
    samples.append(Sample("multi_picture.jpg", rgb, 4.0))  # the first picture, as viewers show
    # Orientation 6: the camera stored the picture turned 90 degrees anticlockwise; viewers turn it back.
    stored = np.rot90(rgb, k=1)
    save(
        "exif_rotated.jpg",
        Image.fromarray(np.ascontiguousarray(stored)),
        rgb,
        4.0,
        quality=95,
        exif=_exif_orientation(6),
    )

    # PNG: palette, RGBA and LA (alpha dropped, as convert("RGB") does), 16-bit grayscale.
    palette = _palette_picture(16)
    save("palette.png", palette, _rgb_of_palette(palette))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"), rgb)
    save("la.png", Image.fromarray(np.dstack([gray, np.full(gray.shape, 200, np.uint8)]), "LA"), gray_rgb)
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)  # mode I;16
    save("gray16.png", sixteen, np.asarray(sixteen.convert("RGB")))

    # GIF: an animation; its first frame is the picture.
    frames = [_palette_picture(8), _palette_picture(4)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    samples.append(Sample("animated.gif", _rgb_of_palette(frames[0]), 0.0))

    # BMP: 1-, 4- and 8-bit palettes, 24- and 32-bit.
    one_bit = Image.fromarray(((np.indices((32, 48)).sum(0) // 5) % 2 * 255).astype(np.uint8)).convert("1")
    save("one_bit.bmp", one_bit, np.repeat(np.asarray(one_bit.convert("L"))[..., None], 3, -1))
    four_bit = _palette_picture(16)
    (folder / "four_bit.bmp").write_bytes(_bmp4_bytes(four_bit))
    samples.append(Sample("four_bit.bmp", _rgb_of_palette(four_bit), 0.0))
    eight_bit = _palette_picture(200)
    save("eight_bit.bmp", eight_bit, _rgb_of_palette(eight_bit))
    save("rgb24.bmp", Image.fromarray(rgb), rgb)
    save("rgba32.bmp", Image.fromarray(rgba, "RGBA"), rgb)

    # WebP: lossy still, lossless, animated (first frame).
    save("still.webp", Image.fromarray(rgb), rgb, 6.0, quality=95)
    save("lossless.webp", Image.fromarray(rgb), rgb, lossless=True)
    animated = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    animated[0].save(folder / "animated.webp", save_all=True, append_images=animated[1:], lossless=True, duration=100)
    samples.append(Sample("animated.webp", rgb, 0.0))

    # TIFF: kept and decoded like the rest.
    save("picture.tiff", Image.fromarray(rgb), rgb)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    for sample in make_corpus(args.folder):
        print(args.folder / sample.name)


if __name__ == "__main__":
    main()
