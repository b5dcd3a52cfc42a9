"""Stage 2: unpack the archive into data/images/<class>/<file>, keeping only images that decode.

The class folders are found by their images, not by names: the class root is the folder whose subfolders hold
the most images, whatever plain files (README, LICENSE, .m scripts) sit beside them, at any depth of the
archive or inside a nested archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz). So the official CaltechDATA zip
(caltech-101/101_ObjectCategories.tar.gz beside Annotations.tar, show_annotation.m and __MACOSX/ forks), the
legacy tar.gz and archives users make by hand all work.

Names are written as the file system and DVC can take them: Info-ZIP's unflagged UTF-8 names read as UTF-8,
non-UTF-8 names become valid UTF-8, backslashes are separators, every name is NFC. Entries that would land outside
the target are refused; a name the file system refuses is left out. Writes metrics/data.json: images per class
and every file left out, with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tarfile
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stages import params
from stages.common import StageError, atomic_output, remove, run, write_json
from stages.images import SUFFIXES as IMAGE_SUFFIXES
from stages.images import check_image

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
# Refuse archives that would unpack to more than this (a zip bomb, or the wrong file): Caltech-101 is 0.15 GB.
MAX_UNPACKED_BYTES = 20 * 2**30
# Linux file systems refuse a name component longer than this many bytes.
MAX_NAME_BYTES = 255
# Archives inside archives are opened this many levels deep at most.
MAX_NESTING = 3
ZIP_UTF8_FLAG = 0x800
ZIP_ENCRYPTED_FLAG = 0x1
ZIP_UNICODE_PATH_FIELD = 0x7075  # Info-ZIP's extra field holding the UTF-8 name beside a legacy one


# --- names ---------------------------------------------------------------------------------------


def _utf8(raw: bytes) -> str:
    """Bytes of a name as text: UTF-8 when they are, else Windows-1252/Latin-1, so the result is always valid."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _zip_name(info: zipfile.ZipInfo) -> str:
    """An entry's name as its maker meant it. Without the UTF-8 flag zipfile decodes the bytes as cp437 (the zip
    standard), but Info-ZIP on Linux and macOS writes UTF-8 bytes without setting the flag."""
    if info.flag_bits & ZIP_UTF8_FLAG:
        return info.filename
    raw = info.filename.encode("cp437")  # the bytes as stored: cp437 maps all 256 byte values
    extra = info.extra
    while len(extra) >= 4:
        field, size = int.from_bytes(extra[:2], "little"), int.from_bytes(extra[2:4], "little")
        body, extra = extra[4 : 4 + size], extra[4 + size :]
        if (
            field == ZIP_UNICODE_PATH_FIELD
            and len(body) > 5
            and body[0] == 1
            and int.from_bytes(body[1:5], "little") == zlib.crc32(raw)
        ):
            return body[5:].decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename  # cp437, what old Windows tools write


def _tar_name(name: str) -> str:
    """tarfile (opened with surrogateescape) keeps non-UTF-8 bytes as surrogates, which DVC cannot encode."""
    return _utf8(name.encode("utf-8", "surrogateescape"))


def _parts(name: str) -> tuple[str, ...]:
    """The NFC path components of an entry name; backslashes are separators (old Windows tools write them)."""
    return tuple(
        unicodedata.normalize("NFC", part) for part in name.replace("\\", "/").split("/") if part not in ("", ".")
    )


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    text = name.replace("\\", "/")
    parts = _parts(name)
    if text.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise StageError(
            f"{archive}: entry {name!r} would be written outside the extraction folder; refusing an unsafe archive"
        )
    return parts


def _ignored(parts: tuple[str, ...]) -> bool:
    """macOS resource forks and hidden files: never data, whatever their suffix says."""
    return any(part == "__MACOSX" or part.startswith(".") for part in parts)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


# --- unpacking -----------------------------------------------------------------------------------


def _progress(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, **kwargs)


class _Writer:
    """Writes entries under `dest`; a name the file system refuses is left out and noted in `skipped`."""

    def __init__(self, dest: Path, max_bytes: int, archive: Path):
        self.dest, self.max_bytes, self.archive = dest, max_bytes, archive
        self.written = 0
        self.skipped: list[dict] = []

    def _refused(self, parts: tuple[str, ...], reason: str) -> None:
        self.skipped.append({"path": "/".join(parts), "reason": reason})

    def directory(self, parts: tuple[str, ...]) -> None:
        if all(len(part.encode()) <= MAX_NAME_BYTES for part in parts):
            # On failure the files inside it are refused one by one, with the reason.
            with contextlib.suppress(OSError):
                self.dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)

    def file(self, parts: tuple[str, ...], source) -> None:
        if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
            self._refused(parts, f"name longer than {MAX_NAME_BYTES} bytes, which the file system refuses")
            return
        target = self.dest.joinpath(*parts)
        if target.exists():
            self._refused(parts, "a second entry with the same name (after Unicode normalisation); the first is kept")
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=False)  # any name the file system refuses fails here, before a byte is read
        except OSError as error:
            self._refused(parts, f"the file system refused the name: {error.strerror or error}")
            return
        with source as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                self.written += len(chunk)
                if self.written > self.max_bytes:  # the sizes in an archive's headers can lie
                    raise StageError(f"{self.archive}: unpacks to more than the {self.max_bytes:,}-byte limit")
                out.write(chunk)


def _unpack_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        entries = []
        for info in zf.infolist():
            name = _zip_name(info)
            parts = _safe_parts(name, archive)
            if parts and not _ignored(parts):
                entries.append((info, name, parts))
        for info, name, _ in entries:
            if info.flag_bits & ZIP_ENCRYPTED_FLAG:
                raise StageError(
                    f"{archive} is encrypted (password-protected; first encrypted entry {name!r}). Unpack it with its "
                    "password, pack the class folders again without one and point data.url at that file"
                )
        declared = sum(info.file_size for info, _, _ in entries)
        if declared > writer.max_bytes:
            raise StageError(
                f"{archive}: entries would unpack to {declared:,} bytes, over the {writer.max_bytes:,}-byte limit"
            )
        for info, name, parts in _progress(iterable=entries, desc=f"unpack {archive.name}", unit="file"):
            if name.endswith(("/", "\\")):
                writer.directory(parts)
            elif stat.S_ISLNK(info.external_attr >> 16):
                link = _utf8(zf.read(info))
                _safe_parts("/".join(parts[:-1] + (link,)), archive)
                continue  # links inside the archive would only duplicate images: skip them
            else:
                try:
                    source = zf.open(info)
                except NotImplementedError as error:  # e.g. compression method 99 (AES) or LZMA variants
                    raise StageError(
                        f"{archive}: entry {name!r} cannot be read ({error}); pack it again with the "
                        "standard deflate compression and no password"
                    ) from None
                writer.file(parts, source)


def _unpack_tar(archive: Path, writer: _Writer) -> None:
    # surrogateescape: names that are not UTF-8 arrive intact, and _tar_name turns them into valid UTF-8.
    with (
        open(archive, "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:*", encoding="utf-8", errors="surrogateescape") as tar,
    ):
        bar = _progress(total=archive.stat().st_size, desc=f"unpack {archive.name}", unit="B", unit_scale=True)
        with bar:
            for member in tar:
                bar.update(raw.tell() - bar.n)
                parts = _safe_parts(_tar_name(member.name), archive)
                if not parts or _ignored(parts):
                    continue
                try:
                    tarfile.data_filter(member, str(writer.dest))
                except tarfile.FilterError as error:
                    raise StageError(f"{archive}: refusing an unsafe entry: {_tar_name(str(error))}") from None
                if member.isdir():
                    writer.directory(parts)
                elif member.isfile():  # links would only duplicate images; devices and fifos are not data
                    writer.file(parts, tar.extractfile(member))
            # tarfile ends the listing quietly at a header cut short; a whole tar ends with a zero block.
            if tar.fileobj.tell() - tar.offset < tarfile.BLOCKSIZE:
                raise StageError(f"{archive} is truncated or corrupt (no end-of-archive marker); download it again")


def _starts_like_zip(archive: Path) -> bool:
    """A zip's first local header: what a zip cut short (its directory is at the end) still has."""
    with open(archive, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def unpack(archive: Path, dest: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> list[dict]:
    """Safely unpack a zip or (compressed) tar archive into `dest`; return the entries left out, with reasons."""
    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(dest, max_bytes, archive)
    again = "; download it again (`dvc repro -f download` if data.url is right)"
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, writer)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, writer)
        elif _starts_like_zip(archive):
            raise StageError(f"{archive} is truncated or corrupt (a zip with no central directory){again}")
        else:
            raise StageError(
                f"{archive} is not a zip or tar archive; check data.url in params.yaml, then run "
                "`dvc repro -f download`"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise StageError(f"{archive} is truncated or corrupt ({error}){again}") from None
    except OSError as error:
        if "CRC" in str(error) or "compressed" in str(error).lower():
            raise StageError(f"{archive} is truncated or corrupt ({error}){again}") from None
        raise
    return writer.skipped


# --- finding the class folders -------------------------------------------------------------------


@dataclass
class Candidate:
    """A folder whose subfolders hold images: in the unpacked tree (`archive` None) or inside a nested archive."""

    where: str  # for messages: "caltech-101.zip: flower_photos/"
    root: tuple[str, ...]
    classes: int
    images: int
    archive: Path | None = None

    def key(self) -> tuple:
        return (self.classes >= 2, self.images)


def _class_roots(files: list[tuple[str, ...]]) -> dict[tuple[str, ...], Counter]:
    """For every folder, its subfolders' direct image counts: root -> Counter({class: images})."""
    roots: dict[tuple[str, ...], Counter] = {}
    for parts in files:
        if len(parts) >= 2 and _is_image_name(parts[-1]) and not _ignored(parts):
            roots.setdefault(parts[:-2], Counter())[parts[-2]] += 1
    return roots


def _listing(folder: Path) -> list[tuple[str, ...]]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _ignored((d,)))
        relative = Path(dirpath).relative_to(folder).parts
        files += [relative + (name,) for name in sorted(filenames) if not _ignored((name,))]
    return files


def _archive_listing(archive: Path) -> list[tuple[str, ...]]:
    """The file names inside an archive, read as unpack() would write them; raises on an unreadable archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return [_parts(_zip_name(info)) for info in zf.infolist() if not info.filename.endswith(("/", "\\"))]
    with tarfile.open(archive, "r:*", encoding="utf-8", errors="surrogateescape") as tar:
        return [_parts(_tar_name(member.name)) for member in tar if member.isfile()]


def _label(path: tuple[str, ...]) -> str:
    return "/".join(path) + "/" if path else "the top folder"


def _candidates(folder: Path, where: str) -> tuple[list[Candidate], list[str]]:
    """Class-root candidates in an unpacked folder and in the archives it holds, and notes on what else it holds."""
    files = _listing(folder)
    found = [
        Candidate(f"{where}: {_label(root)}", root, len(counts), sum(counts.values()))
        for root, counts in _class_roots(files).items()
    ]
    notes = []
    if loose := sum(len(parts) == 1 and _is_image_name(parts[0]) for parts in files):
        notes.append(f"{loose} image(s) directly in the top folder of {where}, not in class folders")
    for parts in files:
        if not _is_archive_name(parts[-1]):
            continue
        nested = folder.joinpath(*parts)
        name = f"{where} > {'/'.join(parts)}"
        try:
            inner = _archive_listing(nested)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
            notes.append(f"{name} (cannot be read: {error})")
            continue
        roots = _class_roots(inner)
        if roots:
            best = max(roots.items(), key=lambda item: (len(item[1]) >= 2, sum(item[1].values())))
            found.append(Candidate(f"{name}: {_label(best[0])}", best[0], len(best[1]), sum(best[1].values()), nested))
        elif any(_is_archive_name(p[-1]) for p in inner if p):
            found.append(Candidate(f"{name} (holds archives)", (), 0, 0, nested))
        else:
            notes.append(f"{name} (no images)")
    return found, notes


def _describe(found: list[Candidate], notes: list[str], folder: Path) -> str:
    lines = [f"{c.where} ({c.classes} subfolder(s) holding {c.images} image(s))" for c in found if c.images]
    lines += [c.where for c in found if not c.images] + notes
    if not lines:
        top = sorted(p.name for p in folder.iterdir() if not _ignored((p.name,)))
        lines = [f"no image files; its top level holds: {', '.join(top[:12]) or 'nothing'}"]
    return "; ".join(lines)


def locate_class_root(
    archive: Path, scratch: Path, max_bytes: int = MAX_UNPACKED_BYTES
) -> tuple[Path, str, list[dict]]:
    """Unpack `archive` under `scratch` (and the nested archive holding the classes, if that is where they are);
    return the class root, where it was found, and the entries left out under it."""
    folder, where = scratch / "archive", archive.name
    skipped = unpack(archive, folder, max_bytes)
    for depth in range(MAX_NESTING + 1):
        found, notes = _candidates(folder, where)
        ranked = sorted(found, key=Candidate.key, reverse=True)
        if not ranked or (ranked[0].images == 0 and ranked[0].archive is None):
            raise StageError(
                f"{archive} holds no class folders of images (expected <class>/<image> files, at the top, "
                f"in a folder or in a nested archive). Found: {_describe(found, notes, folder)}"
            )
        best = ranked[0]
        if len(ranked) > 1 and ranked[1].key() == best.key() and best.images:
            raise StageError(
                f"{archive}: cannot tell which folder holds the classes; these hold the same number of "
                f"images: {_describe(ranked[:2], [], folder)}. Remove one from the archive"
            )
        if best.archive is None:
            prefix = best.root
            kept = [
                {"path": "/".join(s["path"].split("/")[len(prefix) :]), "reason": s["reason"]}
                for s in skipped
                if tuple(s["path"].split("/")[: len(prefix)]) == prefix
            ]
            return folder.joinpath(*best.root), best.where, kept
        if depth == MAX_NESTING:
            break
        folder, where = scratch / f"nested{depth + 1}", f"{where} > {best.archive.relative_to(folder).as_posix()}"
        skipped = unpack(best.archive, folder, max_bytes)
    raise StageError(
        f"{archive}: archives nested more than {MAX_NESTING} deep; unpack it and point data.url at the "
        "archive that holds the class folders"
    )


# --- collecting the images -----------------------------------------------------------------------


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def collect_images(root: Path, images_dir: Path, exclude: tuple[str, ...], skipped: list[dict] | None = None) -> dict:
    """Move every decodable image under root/<class>/ into images_dir/<class>/; report the rest."""
    report = {"excluded": [], "skipped_files": list(skipped or []), "empty_classes": [], "images_per_class": {}}
    for stray in sorted(p for p in root.iterdir() if p.is_file() and not _ignored((p.name,))):
        report["skipped_files"].append({"path": stray.name, "reason": "not inside a class folder"})
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _ignored((p.name,)))
    # Folder names are NFC (unpack made them so); data.exclude may be typed in either form.
    excluded = {_nfc(name) for name in exclude}
    for name in sorted(set(exclude)):
        if _nfc(name) not in {d.name for d in class_dirs}:
            print(f"warning: data.exclude names {name!r}, which is not a class folder in the archive", file=sys.stderr)
    files = [
        (d.name, f)
        for d in class_dirs
        if d.name not in excluded
        for f in sorted(d.rglob("*"))
        if f.is_file() and not _ignored(f.relative_to(d).parts)
    ]
    report["excluded"] = sorted(d.name for d in class_dirs if d.name in excluded)
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
        if d.name not in excluded and d.name not in report["images_per_class"]:
            report["empty_classes"].append(d.name)
    report["skipped_files"].sort(key=lambda entry: entry["path"])
    return report


def extract(
    archive: Path, images_dir: Path, report_path: Path, exclude: tuple[str, ...], max_bytes: int = MAX_UNPACKED_BYTES
) -> dict:
    images_dir = Path(images_dir)
    scratch = images_dir.with_name(f".{images_dir.name}.unpack")
    remove(scratch)
    try:
        root, where, skipped = locate_class_root(Path(archive), scratch, max_bytes)
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
    finally:
        remove(scratch)
    report.update(archive=Path(archive).name, class_root=where, n_classes=len(classes), n_images=sum(classes.values()))
    write_json(report_path, report)
    print(
        f"extracted {report['n_images']} images in {report['n_classes']} classes to {images_dir}; "
        f"{len(report['skipped_files'])} files left out (see {report_path})"
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", type=Path, help="folder holding the downloaded archive (data/raw)")
    parser.add_argument("images_dir", type=Path, help="where class folders are written (data/images)")
    parser.add_argument("report", type=Path, help="JSON report of images kept and left out (metrics/data.json)")
    args = parser.parse_args()
    run(lambda: main(args.raw_dir, args.images_dir, args.report))
