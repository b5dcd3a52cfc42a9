"""Stage 2: unpack the archive into data/images/<class>/<file>, keeping only images that decode.

The class folders are found by their images at any depth of the archive or inside a nested archive
(transfer/unpack/class_folders.py); unpacking is safe and keeps names as their makers meant them
(transfer/unpack/archives.py).
Writes metrics/data.json: images per class and the files left out, with the reason (the first 100 and their number;
all of them in data/images/skipped_files.json when there are more).
"""

from __future__ import annotations

import sys
from pathlib import Path

from transfer.core import cli, params
from transfer.core.errors import StageError
from transfer.core.files import atomic_output, remove, write_json, writes
from transfer.unpack.archives import MAX_UNPACKED_BYTES, unpack
from transfer.unpack.class_folders import (
    SKIPPED_LIST,
    SKIPPED_SAMPLE,
    collect_images,
    locate_class_root,
    skipped_under,
)

# Archives inside archives are opened this many levels deep at most.
MAX_NESTING = 3


def unpack_class_root(archive: Path, scratch: Path, max_bytes: int) -> tuple[Path, str, list[dict]]:
    """Unpack `archive` under `scratch`, then find its class folders; when they are inside a nested archive, unpack
    that one too and look there. Return the class root, where it was found, and the entries left out under it."""
    folder, where = scratch / "archive", archive.name
    skipped = unpack(archive, folder, max_bytes)
    for depth in range(MAX_NESTING + 1):
        found = locate_class_root(archive, folder, where)
        if found.archive is None:
            return folder.joinpath(*found.root), found.where, skipped_under(skipped, found.root)
        if depth == MAX_NESTING:
            break
        nested = scratch / f"nested{depth + 1}"
        where = f"{where} > {found.archive.relative_to(folder).as_posix()}"
        skipped = unpack(found.archive, nested, max_bytes)
        folder = nested
    raise StageError(
        f"{archive}: archives nested more than {MAX_NESTING} deep; unpack it and point data.url at the "
        "archive that holds the class folders"
    )


def extract(
    archive: Path, images_dir: Path, report_path: Path, exclude: tuple[str, ...], max_bytes: int = MAX_UNPACKED_BYTES
) -> dict:
    images_dir = Path(images_dir)
    scratch = images_dir.with_name(f".{images_dir.name}.unpack")
    remove(scratch)
    try:
        with writes(images_dir.parent):  # unpacking writes a copy of the archive's contents there
            root, where, skipped = unpack_class_root(Path(archive), scratch, max_bytes)
        print(f"class folders found in {where}", file=sys.stderr)
        with atomic_output(images_dir) as tmp:
            tmp.mkdir()
            report = collect_images(root, tmp, exclude, skipped)
            classes = report["images_per_class"]
            if len(classes) < 2:
                raise StageError(
                    f"{archive}: {len(classes)} class folder(s) with valid images after data.exclude; "
                    f"a classifier needs at least 2 (class folders looked for in {where})"
                )
            left_out = report["skipped_files"]
            if len(left_out) > SKIPPED_SAMPLE:  # all of them beside the images, the first in the report git keeps
                write_json(tmp / SKIPPED_LIST, left_out)
    finally:
        remove(scratch)
    report.update(archive=Path(archive).name, class_root=where, n_classes=len(classes), n_images=sum(classes.values()))
    report.update(n_skipped_files=len(left_out), skipped_files=left_out[:SKIPPED_SAMPLE])
    write_json(report_path, report)
    listed = f"; all of them in {images_dir / SKIPPED_LIST}" if len(left_out) > SKIPPED_SAMPLE else ""
    print(
        f"extracted {report['n_images']} images in {report['n_classes']} classes to {images_dir}; "
        f"{len(left_out)} files left out (see {report_path}{listed})"
    )
    return report


def find_archive(raw_dir: Path) -> Path:
    raw_dir = Path(raw_dir)
    archives = (
        [p for p in sorted(raw_dir.iterdir()) if p.is_file() and not p.name.startswith(".")] if raw_dir.is_dir() else []
    )
    if len(archives) != 1:
        raise StageError(f"expected exactly one archive in {raw_dir}, found {len(archives)}; run `dvc repro download`")
    return archives[0]


def main(raw_dir: Path, images_dir: Path, report_path: Path) -> None:
    data = params.load().data
    extract(find_archive(raw_dir), images_dir, report_path, data.exclude)


if __name__ == "__main__":
    cli.stage(
        main,
        __doc__,
        raw_dir="folder holding the downloaded archive (data/raw)",
        images_dir="where class folders are written (data/images)",
        report_path="JSON report of images kept and left out (metrics/data.json)",
    )
