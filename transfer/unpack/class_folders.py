"""Finding the class folders in an unpacked archive and collecting their images.

The class folders are found by their images, not by names: the class root is the folder whose subfolders hold
the most images, whatever plain files (README, LICENSE, .m scripts) sit beside them, at any depth of the
archive or inside a nested archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz). So the official CaltechDATA zip
(caltech-101/101_ObjectCategories.tar.gz beside Annotations.tar, show_annotation.m and __MACOSX/ forks), the
legacy tar.gz and archives users make by hand all work.
"""

from __future__ import annotations

import difflib
import os
import sys
import tarfile
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transfer.core.errors import StageError
from transfer.core.images import check_image
from transfer.core.progress import progress
from transfer.unpack import formats
from transfer.unpack.entry_names import entry_parts, ignored, is_archive_name, is_image_name, tar_name, zip_name

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
    """Every folder with a subfolder holding images directly, and the images in each of its subfolders counted
    with their own sub-folders (as Keras and torchvision read a class): root -> Counter({class: images}).

    So in animals/{cats/{indoor,outdoor},dogs,birds}/ the root animals/ has the classes cats (indoor and outdoor
    images together), dogs and birds, and more images than cats/ alone: a class with sub-folders never wins over
    the folder holding it and its siblings."""
    images = [parts for parts in files if len(parts) >= 2 and is_image_name(parts[-1]) and not ignored(parts)]
    roots: dict[tuple[str, ...], Counter] = {parts[:-2]: Counter() for parts in images}
    for parts in images:
        for depth in range(len(parts) - 1):
            if parts[:depth] in roots:
                roots[parts[:depth]][parts[depth]] += 1
    return roots


def _listing(folder: Path) -> list[tuple[str, ...]]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not ignored((d,)))
        relative = Path(dirpath).relative_to(folder).parts
        files += [relative + (name,) for name in sorted(filenames) if not ignored((name,))]
    return files


def _archive_listing(archive: Path) -> list[tuple[str, ...]]:
    """The file names inside an archive, read as unpack() would write them; raises on an unreadable archive."""
    if formats.is_zip(archive):
        with zipfile.ZipFile(archive) as zf:
            return [entry_parts(zip_name(info)) for info in zf.infolist() if not info.filename.endswith(("/", "\\"))]
    with tarfile.open(archive, "r:*", encoding="utf-8", errors="surrogateescape") as tar:
        # Links count as the files they copy (see archives.py).
        return [entry_parts(tar_name(m.name)) for m in tar if m.isfile() or m.issym() or m.islnk()]


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
    if loose := sum(len(parts) == 1 and is_image_name(parts[0]) for parts in files):
        notes.append(f"{loose} image(s) directly in the top folder of {where}, not in class folders")
    for parts in files:
        if not is_archive_name(parts[-1]):
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
        elif any(is_archive_name(p[-1]) for p in inner if p):
            found.append(Candidate(f"{name} (holds archives)", (), 0, 0, nested))
        else:
            notes.append(f"{name} (no images)")
    return found, notes


def _describe(found: list[Candidate], notes: list[str], folder: Path) -> str:
    lines = [f"{c.where} ({c.classes} subfolder(s) holding {c.images} image(s))" for c in found if c.images]
    lines += [c.where for c in found if not c.images] + notes
    if not lines:
        top = sorted(p.name for p in folder.iterdir() if not ignored((p.name,)))
        lines = [f"no image files; its top level holds: {', '.join(top[:12]) or 'nothing'}"]
    return "; ".join(lines)


def locate_class_root(archive: Path, folder: Path, where: str) -> Candidate:
    """The class folders in the unpacked `folder` (named `where` in messages; `archive` is the archive the user
    gave): a Candidate whose `root` is under `folder`, or whose `archive` is the nested archive that holds them
    (unpack it and look there). Nothing is unpacked here."""
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
    return best


def skipped_under(skipped: list[dict], root: tuple[str, ...]) -> list[dict]:
    """The entries left out while unpacking that lie under the class root, with paths relative to it."""
    return [
        {"path": "/".join(s["path"].split("/")[len(root) :]), "reason": s["reason"]}
        for s in skipped
        if tuple(s["path"].split("/")[: len(root)]) == root
    ]


# --- collecting the images -----------------------------------------------------------------------

# metrics/data.json, which git keeps, lists this many of the files left out (the first by path), and their number;
# when there are more, every one is listed in skipped_files.json beside the class folders (in data/images, kept by
# DVC): 100,000 entries made data.json 10 MB.
SKIPPED_SAMPLE = 100
SKIPPED_LIST = "skipped_files.json"


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def collect_images(root: Path, images_dir: Path, exclude: tuple[str, ...], skipped: list[dict] | None = None) -> dict:
    """Move every decodable image under root/<class>/ into images_dir/<class>/; report the rest."""
    report: dict[str, Any] = {
        "excluded": [],
        "skipped_files": list(skipped or []),
        "empty_classes": [],
        "images_per_class": {},
    }
    for stray in sorted(p for p in root.iterdir() if p.is_file() and not ignored((p.name,))):
        report["skipped_files"].append({"path": stray.name, "reason": "not inside a class folder"})
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not ignored((p.name,)))
    # Folder names are NFC (unpack made them so); data.exclude may be typed in either form.
    excluded = {_nfc(name) for name in exclude}
    names = [d.name for d in class_dirs]
    for name in sorted(set(exclude)):
        if _nfc(name) not in names:
            close = difflib.get_close_matches(_nfc(name), names, n=1) or difflib.get_close_matches(
                _nfc(name).casefold(), [n.casefold() for n in names], n=1
            )
            nearest = next((n for n in names if close and close[0] in (n, n.casefold())), None)
            hint = f"; did you mean {nearest!r}?" if nearest else ""
            print(
                f"warning: data.exclude names {name!r}, which is not a class folder in the archive{hint}",
                file=sys.stderr,
            )
    files = [
        (d.name, f)
        for d in class_dirs
        if d.name not in excluded
        for f in sorted(d.rglob("*"))
        if f.is_file() and not ignored(f.relative_to(d).parts)
    ]
    report["excluded"] = sorted(d.name for d in class_dirs if d.name in excluded)
    for label, path in progress(files, desc="check images", unit="img"):
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
