"""Stage 2: unpack the archive into data/images/<class>/<file>, keeping only images that decode.

Handles the official CaltechDATA zip (an outer zip holding 101_ObjectCategories.tar.gz, Annotations.tar
and a __MACOSX/ folder of resource forks), the legacy 101_ObjectCategories.tar.gz, and any .zip/.tar/.tar.gz
whose class folders sit at the top or one folder down. Entries that would land outside the target are
refused. Writes metrics/data.json: images per class and every file left out, with the reason.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from stages import params
from stages.common import StageError, atomic_output, remove, run, write_json
from stages.images import check_image

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# Refuse archives that would unpack to more than this (a zip bomb, or the wrong file): Caltech-101 is 0.15 GB.
MAX_UNPACKED_BYTES = 20 * 2**30


def _ignored(name: str) -> bool:
    """macOS resource forks and hidden files: never data, whatever their suffix says. (A `..` part is not
    hidden: _target refuses it.)"""
    return any(part == "__MACOSX" or (part.startswith(".") and part != "..") for part in PurePosixPath(name).parts)


def _progress(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, **kwargs)


def _target(dest: Path, name: str, archive: Path) -> Path:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise StageError(f"{archive}: entry {name!r} would be written outside the extraction folder; refusing an unsafe archive")
    return dest / path


def _unpack_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        entries = [info for info in zf.infolist() if not _ignored(info.filename)]
        declared = sum(info.file_size for info in entries)
        if declared > max_bytes:
            raise StageError(f"{archive}: entries would unpack to {declared:,} bytes, over the {max_bytes:,}-byte limit")
        written = 0
        for info in _progress(iterable=entries, desc=f"unpack {archive.name}", unit="file"):
            target = _target(dest, info.filename, archive)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                link = zf.read(info).decode("utf-8", "replace")
                _target(dest, str(PurePosixPath(info.filename).parent / link), archive)
                continue  # links inside the archive would only duplicate images: skip them
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:  # the sizes in a zip's directory can lie
                        raise StageError(f"{archive}: unpacks to more than the {max_bytes:,}-byte limit")
                    out.write(chunk)


def _unpack_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    written = 0
    with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        bar = _progress(total=archive.stat().st_size, desc=f"unpack {archive.name}", unit="B", unit_scale=True)
        with bar:
            for member in tar:
                bar.update(raw.tell() - bar.n)
                if _ignored(member.name):
                    continue
                _target(dest, member.name, archive)
                try:
                    member = tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as error:
                    raise StageError(f"{archive}: refusing an unsafe entry: {error}") from None
                if member.issym() or member.islnk():
                    continue  # safe, but links would only duplicate images
                written += member.size
                if written > max_bytes:
                    raise StageError(f"{archive}: unpacks to more than the {max_bytes:,}-byte limit")
                tar.extract(member, dest, filter="data")
            # tarfile ends the listing quietly at a header cut short; a whole tar ends with a zero block.
            if tar.fileobj.tell() - tar.offset < tarfile.BLOCKSIZE:
                raise StageError(f"{archive} is truncated or corrupt (no end-of-archive marker); download it again")


def _starts_like_zip(archive: Path) -> bool:
    """A zip's first local header: what a zip cut short (its directory is at the end) still has."""
    with open(archive, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def unpack(archive: Path, dest: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Safely unpack a zip or (compressed) tar archive into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, dest, max_bytes)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, dest, max_bytes)
        elif _starts_like_zip(archive):
            raise StageError(f"{archive} is truncated or corrupt (a zip with no central directory); download it again")
        else:
            raise StageError(f"{archive} is not a zip or tar archive; check data.url in params.yaml")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise StageError(f"{archive} is truncated or corrupt ({error}); download it again") from None
    except OSError as error:
        if "CRC" in str(error) or "compressed" in str(error).lower():
            raise StageError(f"{archive} is truncated or corrupt ({error}); download it again") from None
        raise


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _ignored(p.name))


def find_class_root(top: Path) -> Path | None:
    """The folder whose subfolders are classes: `top` itself or its only subfolder."""

    def holds_classes(folder: Path) -> bool:
        return any(
            any(f.is_file() and not f.name.lower().endswith(ARCHIVE_SUFFIXES) for f in d.iterdir())
            for d in _visible_dirs(folder)
        )

    if holds_classes(top):
        return top
    subdirs = _visible_dirs(top)
    if len(subdirs) == 1 and holds_classes(subdirs[0]):
        return subdirs[0]
    return None


def _image_members(archive: Path) -> int:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
        else:
            with tarfile.open(archive, "r:*") as tar:
                names = tar.getnames()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError):
        return 0
    return sum(name.lower().endswith(IMAGE_SUFFIXES) and not _ignored(name) for name in names)


def nested_image_archive(top: Path) -> Path | None:
    """Of the archives inside the archive, the one holding the most images (101_ObjectCategories.tar.gz,
    not Annotations.tar, in the official zip)."""
    candidates = [
        p for p in sorted(top.rglob("*"))
        if p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES) and not _ignored(str(p.relative_to(top)))
    ]
    counted = [(_image_members(p), p) for p in candidates]
    best = max(counted, default=(0, None), key=lambda item: item[0])
    return best[1] if best[0] > 0 else None


def collect_images(root: Path, images_dir: Path, exclude: tuple[str, ...]) -> dict:
    """Move every decodable image under root/<class>/ into images_dir/<class>/; report the rest."""
    report = {"excluded": [], "skipped_files": [], "empty_classes": [], "images_per_class": {}}
    for stray in sorted(p for p in root.iterdir() if p.is_file() and not _ignored(p.name)):
        report["skipped_files"].append({"path": stray.name, "reason": "not inside a class folder"})
    class_dirs = _visible_dirs(root)
    for name in sorted(set(exclude) - {d.name for d in class_dirs}):
        print(f"warning: data.exclude names {name!r}, which is not a class folder in the archive", file=sys.stderr)
    files = [
        (d.name, f) for d in class_dirs if d.name not in exclude
        for f in sorted(d.rglob("*")) if f.is_file() and not _ignored(str(f.relative_to(d)))
    ]
    report["excluded"] = sorted(d.name for d in class_dirs if d.name in exclude)
    for label, path in _progress(iterable=files, desc="check images", unit="img"):
        relative = path.relative_to(root)
        reason = check_image(path)
        if reason:
            report["skipped_files"].append({"path": relative.as_posix(), "reason": reason})
            continue
        target = images_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        report["images_per_class"][label] = report["images_per_class"].get(label, 0) + 1
    for d in class_dirs:
        if d.name not in exclude and d.name not in report["images_per_class"]:
            report["empty_classes"].append(d.name)
    return report


def extract(archive: Path, images_dir: Path, report_path: Path, exclude: tuple[str, ...],
            max_bytes: int = MAX_UNPACKED_BYTES) -> dict:
    images_dir = Path(images_dir)
    scratch = images_dir.with_name(f".{images_dir.name}.unpack")
    remove(scratch)
    try:
        unpack(archive, scratch / "outer", max_bytes)
        root = find_class_root(scratch / "outer")
        if root is None and (inner := nested_image_archive(scratch / "outer")) is not None:
            unpack(inner, scratch / "inner", max_bytes)
            root = find_class_root(scratch / "inner")
        if root is None:
            raise StageError(f"{archive} holds no class folders of images (expected <class>/<image> at the top or one folder down)")
        with atomic_output(images_dir) as tmp:
            tmp.mkdir()
            report = collect_images(root, tmp, exclude)
            classes = report["images_per_class"]
            if len(classes) < 2:
                raise StageError(f"{archive}: {len(classes)} class folder(s) with valid images after data.exclude; a classifier needs at least 2")
    finally:
        remove(scratch)
    report.update(archive=archive.name, n_classes=len(classes), n_images=sum(classes.values()))
    write_json(report_path, report)
    print(f"extracted {report['n_images']} images in {report['n_classes']} classes to {images_dir}; "
          f"{len(report['skipped_files'])} files left out (see {report_path})")
    return report


def find_archive(raw_dir: Path) -> Path:
    raw_dir = Path(raw_dir)
    archives = [p for p in sorted(raw_dir.iterdir()) if p.is_file() and not p.name.startswith(".")] if raw_dir.is_dir() else []
    if len(archives) != 1:
        raise StageError(f"expected exactly one archive in {raw_dir}, found {len(archives)}; run `dvc repro download`")
    return archives[0]


def main(raw_dir: Path, images_dir: Path, report_path: Path) -> None:
    data = params.load().data
    extract(find_archive(raw_dir), images_dir, report_path, data.exclude)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", type=Path, help="folder holding the downloaded archive (data/raw)")
    parser.add_argument("images_dir", type=Path, help="where class folders are written (data/images)")
    parser.add_argument("report", type=Path, help="JSON report of images kept and left out (metrics/data.json)")
    args = parser.parse_args()
    run(lambda: main(args.raw_dir, args.images_dir, args.report))
