"""Unpacking zip and tar archives safely, with names as their makers meant them.

Names are written as the file system and DVC can take them: Info-ZIP's unflagged UTF-8 names read as UTF-8,
non-UTF-8 names become valid UTF-8, backslashes are separators, every name is NFC. Entries that would land outside
the target are refused; a name the file system refuses is left out and reported. Hidden files, AppleDouble
`._*` files, `.DS_Store` and `__MACOSX/` forks are left out and reported with their reason. A symlink or hard link
to a file inside the archive is written as a copy of that file (never as a link, so nothing leads outside);
a link to a folder or to nothing is reported.
"""

from __future__ import annotations

import contextlib
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from transfer.core.errors import StageError
from transfer.core.files import check_room
from transfer.core.progress import progress
from transfer.unpack import formats
from transfer.unpack.entry_names import entry_parts, ignored, ignored_reason, safe_parts, tar_name, utf8_name, zip_name

# Refuse archives that would unpack to more than this (a zip bomb, or the wrong file): Caltech-101 is 0.15 GB.
MAX_UNPACKED_BYTES = 20 * 2**30
# Nor more than this many times their own size, with this much allowed whatever the size: images hardly compress
# (Caltech-101 unpacks to 1.1 times its zip), while a zip bomb's deflate reaches 1,000 times. 64 MiB keeps small
# archives of flat pictures (BMP, TIFF) fine.
MAX_RATIO, RATIO_FLOOR = 100, 64 * 2**20
# Linux file systems refuse a name component longer than this many bytes.
MAX_NAME_BYTES = 255
# Nor a link target longer than PATH_MAX: a zip may store a link's target compressed, hundreds of MB of it.
MAX_LINK_BYTES = 4096
# A whole path past PATH_MAX (4,096 bytes) cannot be opened. The folder the project sits in comes before the entry's
# path, so an entry's own path is held to less; a fixed bound, so metrics/data.json does not depend on that folder.
MAX_PATH_BYTES = 3072
ZIP_ENCRYPTED_FLAG = 0x1


# --- unpacking -----------------------------------------------------------------------------------


class _Writer:
    """Writes entries under `dest`; a name the file system refuses is left out and noted in `skipped`."""

    def __init__(self, dest: Path, max_bytes: int, archive: Path):
        ratio_bound = max(MAX_RATIO * archive.stat().st_size, RATIO_FLOOR)
        self.dest, self.max_bytes, self.archive = dest, min(max_bytes, ratio_bound), archive
        self.why = (
            f"{MAX_RATIO} times its own size ({archive.stat().st_size:,} bytes): a zip bomb, or not an archive of "
            "images"
            if ratio_bound < max_bytes
            else "limit"
        )
        self.written = 0
        self.skipped: list[dict] = []
        self.links: dict[tuple[str, ...], tuple[str, ...]] = {}  # link -> its target, both from the archive's top
        self.folders: set[Path] = set()  # made already

    def refuse(self, parts: tuple[str, ...], reason: str) -> None:
        self.skipped.append({"path": "/".join(parts), "reason": reason})

    def hidden(self, parts: tuple[str, ...]) -> None:
        self.refuse(parts, ignored_reason(parts))

    def over(self, size: int, verb: str = "unpacks to more than") -> StageError:
        if self.why == "limit":
            return StageError(f"{self.archive}: {verb} the {self.max_bytes:,}-byte limit")
        return StageError(f"{self.archive}: {verb} {self.max_bytes:,} bytes, {self.why}; nothing was kept")

    def count(self, size: int) -> None:
        self.written += size
        if self.written > self.max_bytes:  # the sizes in an archive's headers can lie
            raise self.over(self.written)

    def long_link(self, parts: tuple[str, ...], link: str) -> bool:
        """Whether a link's target is too long to be a name here (then it is left out, with the reason)."""
        self.count(len(link.encode()))
        if len(link.encode()) > MAX_LINK_BYTES:
            self.refuse(parts, f"link target longer than {MAX_LINK_BYTES} bytes, which no file system takes")
        elif any(len(part.encode()) > MAX_NAME_BYTES for part in link.split("/")):
            self.refuse(parts, f"link to a name longer than {MAX_NAME_BYTES} bytes, which the file system refuses")
        else:
            return False
        return True

    def link(self, parts: tuple[str, ...], target: tuple[str, ...]) -> None:
        """A symlink or hard link inside the archive: written as a copy of its target once all files are out."""
        self.links[parts] = target

    def copy_links(self) -> None:
        """Each link becomes a copy of the file it points to (following links to links); a link to a folder or to
        nothing is listed with its reason. Copies, not links, so nothing under dest points anywhere."""
        for parts, target in self.links.items():
            seen = {parts}
            while target in self.links and target not in seen:
                seen.add(target)
                target = self.links[target]
            source = self.dest.joinpath(*target)
            shown = "/".join(target) or "the top folder"
            if self.too_long(target) or target in seen or not source.is_file() or source.is_symlink():
                self.refuse(parts, f"link to {shown}, which is not a file in the archive")
            else:
                with open(source, "rb") as copy:
                    self.file(parts, copy)

    @staticmethod
    def too_long(parts: tuple[str, ...]) -> str | None:
        """Why the file system would refuse this path for its length, or None."""
        if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
            return f"name longer than {MAX_NAME_BYTES} bytes, which the file system refuses"
        if len("/".join(parts).encode()) > MAX_PATH_BYTES:
            return (
                f"path longer than {MAX_PATH_BYTES:,} bytes, which the file system refuses (4,096 for the whole "
                "path, the project's folder included)"
            )
        return None

    def directory(self, parts: tuple[str, ...]) -> None:
        if not self.too_long(parts):
            # On failure the files inside it are refused one by one, with the reason.
            with contextlib.suppress(OSError):
                self.dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)

    def file(self, parts: tuple[str, ...], source) -> None:
        if why := self.too_long(parts):
            self.refuse(parts, why)
            return
        target = self.dest.joinpath(*parts)
        try:
            if target.parent not in self.folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                self.folders.add(target.parent)
            # One exclusive create: a second entry of the same name, or a name the file system refuses, fails here
            # before a byte is read. (Creating the file empty and opening it again truncated it, which made ext4
            # flush each file: 100,000 tiny entries took minutes to write and to remove.)
            try:
                out = open(target, "xb")  # noqa: SIM115 (closed by the with below, once the name is known to work)
            except FileExistsError:
                self.refuse(parts, "a second entry with the same name (after Unicode normalisation); the first is kept")
                return
        except OSError as error:
            self.refuse(parts, f"the file system refused the name: {error.strerror or error}")
            return
        with source as src, out:
            while chunk := src.read(1 << 20):
                self.count(len(chunk))
                out.write(chunk)


def _unpack_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        entries = []
        for info in zf.infolist():
            name = zip_name(info)
            parts = safe_parts(name, archive)
            if parts and ignored(parts):
                if not name.endswith(("/", "\\")):
                    writer.hidden(parts)
            elif parts:
                entries.append((info, name, parts))
        for info, name, _ in entries:
            if info.flag_bits & ZIP_ENCRYPTED_FLAG:
                raise StageError(
                    f"{archive} is encrypted (password-protected; first encrypted entry {name!r}). Unpack it with its "
                    "password, pack the class folders again without one and point data.url at that file"
                )
        declared = sum(info.file_size for info, _, _ in entries)
        if declared > writer.max_bytes:  # before a byte is written
            raise writer.over(declared, f"entries would unpack to {declared:,} bytes, over")
        check_room(writer.dest, declared, "nothing was written")
        for info, name, parts in progress(entries, desc=f"unpack {archive.name}", unit="file"):
            if name.endswith(("/", "\\")):
                writer.directory(parts)
            elif stat.S_ISLNK(info.external_attr >> 16):
                with zf.open(info) as source:  # never whole: a link's target is a name, not data
                    link = utf8_name(source.read(MAX_LINK_BYTES + 1))
                if writer.long_link(parts, link):
                    continue
                if link.startswith("/"):
                    safe_parts(link, archive)  # refuses it
                writer.link(parts, _inside(parts[:-1], link, name, archive))
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
    # surrogateescape: names that are not UTF-8 arrive intact, and tar_name turns them into valid UTF-8.
    with (
        open(archive, "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:*", encoding="utf-8", errors="surrogateescape") as tar,
    ):
        bar = progress(desc=f"unpack {archive.name}", unit="B", total=archive.stat().st_size)
        with bar:
            for member in tar:
                bar.update(raw.tell() - bar.n)
                parts = safe_parts(tar_name(member.name), archive)
                linked = member.issym() or member.islnk()
                if not parts or (linked and writer.long_link(parts, tar_name(member.linkname))):
                    continue
                try:  # refuses links leading outside, devices, absolute names
                    tarfile.data_filter(member, str(writer.dest))
                except tarfile.FilterError as error:
                    raise StageError(f"{archive}: refusing an unsafe entry: {tar_name(str(error))}") from None
                if ignored(parts):
                    if not member.isdir():
                        writer.hidden(parts)
                elif member.isdir():
                    writer.directory(parts)
                elif member.isfile():
                    writer.file(parts, tar.extractfile(member))
                elif member.issym():
                    writer.link(parts, _inside(parts[:-1], tar_name(member.linkname), member.name, archive))
                elif member.islnk():  # a hard link names its target from the archive's top
                    writer.link(parts, _inside((), tar_name(member.linkname), member.name, archive))
                else:
                    writer.refuse(parts, "neither a file, a folder nor a link")
            # tarfile ends the listing quietly at a header cut short; a whole tar ends with a zero block.
            if tar.fileobj.tell() - tar.offset < tarfile.BLOCKSIZE:
                raise StageError(f"{archive} is truncated or corrupt (no end-of-archive marker); download it again")


def _inside(folder: tuple[str, ...], link: str, name: str, archive: Path) -> tuple[str, ...]:
    """A link's target as parts from the archive's top; refused when it would lead outside the archive."""
    parts = list(folder)
    for part in entry_parts(link):
        if part != "..":
            parts.append(part)
        elif parts:
            parts.pop()
        else:
            raise StageError(f"{archive}: entry {name!r} would be written outside the extraction folder (a link to "
                             f"{link!r}); refusing an unsafe archive")  # fmt: skip
    return tuple(parts)


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
        if formats.is_zip(archive):
            _unpack_zip(archive, writer)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, writer)
        elif _starts_like_zip(archive):
            raise StageError(f"{archive} is truncated or corrupt (a zip with no central directory){again}")
        else:
            problem = formats.check(archive)
            if problem and problem.incomplete:
                raise StageError(f"{archive} is truncated or corrupt ({problem.what}){again}")
            what = f": it is {problem.what}" if problem else ""
            raise StageError(
                f"{archive} is not a zip or tar archive{what}; check data.url in params.yaml, then run "
                "`dvc repro -f download`"
            )
        writer.copy_links()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise StageError(f"{archive} is truncated or corrupt ({error}){again}") from None
    except OSError as error:
        if "CRC" in str(error) or "compressed" in str(error).lower():
            raise StageError(f"{archive} is truncated or corrupt ({error}){again}") from None
        raise
    return writer.skipped
