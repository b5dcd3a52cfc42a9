"""stages/extract.py: every archive layout, unsafe and broken archives, and every kind of bad or odd image."""

from __future__ import annotations

import io
import json
import os
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from stages import extract
from synthetic import archive_bytes, datasets
from synthetic.datasets import make_image
from synthetic.repos import ROOT
from tests.helpers import run_stage
from transfer.core.errors import StageError

EXCLUDE = ("BACKGROUND_Google",)


def image_bytes(index: int = 0, fmt: str = "JPEG", mode: str = "RGB", size: int = 32) -> bytes:
    image = make_image(index, 4, size, np.random.default_rng(index)).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def good_classes(n_classes: int = 2, per_class: int = 3, prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}class_{c}/image_{i}.jpg": image_bytes(c) for c in range(n_classes) for i in range(per_class)}


def make_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symlink, as Info-ZIP stores it
            zf.writestr(info, target)
    return path


def make_tar(
    path: Path,
    entries: dict[str, bytes],
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for kind, links in ((tarfile.SYMTYPE, symlinks or {}), (tarfile.LNKTYPE, hardlinks or {})):
            for name, target in links.items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                tar.addfile(info)
    return path


@pytest.fixture
def out(tmp_path):
    return {
        "images": tmp_path / "data" / "images",
        "report": tmp_path / "metrics" / "data.json",
        "data": tmp_path / "data",
    }


def run_extract(archive: Path, out: dict, exclude=EXCLUDE, **options) -> dict:
    return extract.extract(archive, out["images"], out["report"], exclude, **options)


def listing(images: Path) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(images.iterdir())}


def assert_failed_cleanly(out: dict) -> None:
    """A failed extract leaves nothing at the images path, no report and no scratch folders."""
    assert not out["images"].exists()
    assert not out["report"].exists()
    if out["data"].exists():  # no scratch folder (.images.unpack, .images.tmp) left behind
        assert list(out["data"].iterdir()) == []


def extract_error(archive: Path, out: dict, **options) -> str:
    with pytest.raises(StageError) as caught:
        run_extract(archive, out, **options)
    assert_failed_cleanly(out)
    return str(caught.value)


# --- the layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["official", "legacy", "user_zip", "user_tar"])
def test_layouts(archives, out, name):
    archive, expected = archives[name]
    report = run_extract(archive, out)

    assert report["images_per_class"] == expected["images_per_class"]
    assert sorted(f["path"] for f in report["skipped_files"]) == sorted(expected["skipped"])
    assert report["excluded"] == expected["excluded"]
    assert report["empty_classes"] == []
    assert report["n_classes"] == 4 and report["n_images"] == 48 and report["archive"] == archive.name
    assert json.loads(out["report"].read_text()) == report
    # data/images holds exactly the class folders with their good images: no BACKGROUND_Google, no
    # __MACOSX, no Annotations, no corrupt JPEG or text file.
    found = listing(out["images"])
    assert sorted(found) == sorted(expected["images_per_class"])
    assert {label: len(files) for label, files in found.items()} == expected["images_per_class"]
    # No scratch folders left beside it.
    assert sorted(p.name for p in out["data"].iterdir()) == ["images"]


def test_official_zip_skips_macosx_decoys_and_annotations(archives, out):
    archive, _ = archives["official"]
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert any(n.startswith("__MACOSX/") and n.endswith(".tar.gz") for n in names)  # the decoys are there
    run_extract(archive, out)
    assert not any(p.suffix == ".mat" for p in out["images"].rglob("*"))


def test_grayscale_and_cmyk_jpegs_are_kept_corrupt_and_text_left_out_with_reasons(archives, out):
    archive, expected = archives["legacy"]
    report = run_extract(archive, out)
    first = sorted(expected["images_per_class"])[0]
    with Image.open(out["images"] / first / "image_0001.jpg") as gray:
        assert gray.mode == "L"
    with Image.open(out["images"] / first / "image_0002.jpg") as cmyk:
        assert cmyk.mode == "CMYK"
    reasons = {f["path"].split("/")[-1]: f["reason"] for f in report["skipped_files"]}
    assert "truncated" in reasons["image_corrupt.jpg"].lower()
    assert "not an image" in reasons["notes.txt"]


def test_exclude_naming_no_folder_warns(archives, out, capsys):
    archive, expected = archives["user_zip"]
    report = run_extract(archive, out, exclude=("BACKGROUND_Gogle",))
    assert report["excluded"] == []
    assert "data.exclude names 'BACKGROUND_Gogle', which is not a class folder" in capsys.readouterr().err


def test_exclude_naming_no_folder_suggests_the_nearest(out, tmp_path, capsys):
    archive = make_zip(tmp_path / "a.zip", {**good_classes(), "BACKGROUND_Google/x.jpg": image_bytes(2)})
    run_extract(archive, out, exclude=("background_gogle", "clas_0"))
    err = capsys.readouterr().err
    assert "'background_gogle', which is not a class folder in the archive; did you mean 'BACKGROUND_Google'?" in err
    assert "'clas_0', which is not a class folder in the archive; did you mean 'class_0'?" in err


def test_without_exclude_background_is_a_class(archives, out):
    archive, _ = archives["legacy"]
    report = run_extract(archive, out, exclude=())
    assert report["images_per_class"]["BACKGROUND_Google"] == 3


def test_rerun_replaces_previous_images(archives, out):
    run_extract(archives["legacy"][0], out)
    (out["images"] / "stale_class").mkdir()
    report = run_extract(archives["user_zip"][0], out)
    assert sorted(listing(out["images"])) == sorted(report["images_per_class"])


# --- broken and unsafe archives ------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.37, 0.9])
@pytest.mark.parametrize("name", ["official", "legacy", "user_zip", "user_tar"])
def test_truncated_archive(archives, out, tmp_path, name, fraction):
    source, _ = archives[name]
    archive = tmp_path / source.name
    archive.write_bytes(source.read_bytes()[: int(source.stat().st_size * fraction)])
    message = extract_error(archive, out)
    assert "is truncated or corrupt" in message and "download it again" in message


def test_tar_cut_at_a_header_boundary(archives, out, tmp_path):
    source, _ = archives["user_tar"]
    data = source.read_bytes()
    with tarfile.open(source) as tar:
        members = tar.getmembers()
    middle = members[len(members) // 2].offset  # where a header starts: tarfile would stop there quietly
    for cut in (middle, middle + 100):
        archive = tmp_path / f"cut{cut}.tar"
        archive.write_bytes(data[:cut])
        assert "truncated or corrupt" in extract_error(archive, out)


def test_not_an_archive(out, tmp_path):
    archive = tmp_path / "caltech-101.zip"
    archive.write_text("<html>Sign in to download</html>\n" * 40)
    assert "is not a zip or tar archive" in extract_error(archive, out)
    empty = tmp_path / "empty.zip"
    empty.write_bytes(b"")
    assert "is not a zip or tar archive" in extract_error(empty, out)


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_empty_archive(out, tmp_path, suffix):
    archive = tmp_path / f"empty{suffix}"
    (make_zip if suffix == ".zip" else make_tar)(archive, {})
    assert "holds no class folders" in extract_error(archive, out)


def test_images_directly_at_the_top_are_a_clear_error(out, tmp_path):
    flat = make_zip(tmp_path / "flat.zip", {f"image_{i}.jpg": image_bytes(i) for i in range(4)})
    message = extract_error(flat, out)
    assert "holds no class folders" in message and "4 image(s) directly in the top folder" in message


def test_class_folders_two_folders_down_are_found(out, tmp_path):
    deep = make_tar(tmp_path / "deep.tar", {**good_classes(prefix="a/b/"), "a/README.txt": b"about\n"})
    report = run_extract(deep, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3} and report["class_root"] == "deep.tar: a/b/"


UNSAFE_NAMES = ["../evil.jpg", "class_0/../../evil.jpg", "/tmp/evil_absolute.jpg"]


@pytest.mark.parametrize("maker", [make_zip, make_tar], ids=["zip", "tar"])
@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_entries_escaping_the_target_are_refused(out, tmp_path, maker, name):
    archive = maker(
        tmp_path / ("bad.zip" if maker is make_zip else "bad.tar"), {**good_classes(), name: image_bytes(3)}
    )
    message = extract_error(archive, out)
    assert f"entry {name!r} would be written outside the extraction folder" in message
    assert not (tmp_path / "evil.jpg").exists() and not (out["data"] / "evil.jpg").exists()
    assert not Path("/tmp/evil_absolute.jpg").exists()


@pytest.mark.parametrize("target", ["../../../../etc/passwd", "/etc/passwd"])
def test_tar_symlink_pointing_outside_is_refused(out, tmp_path, target):
    archive = make_tar(tmp_path / "links.tar", good_classes(), symlinks={"class_0/link.jpg": target})
    message = extract_error(archive, out)
    assert "refusing an unsafe entry" in message and "class_0/link.jpg" in message


def test_tar_hardlink_pointing_outside_is_refused(out, tmp_path):
    archive = make_tar(tmp_path / "links.tar", good_classes(), hardlinks={"class_0/link.jpg": "../../etc/passwd"})
    message = extract_error(archive, out)
    assert "refusing an unsafe entry" in message and "class_0/link.jpg" in message


def test_zip_symlink_pointing_outside_is_refused(out, tmp_path):
    archive = make_zip(tmp_path / "links.zip", good_classes(), symlinks={"class_0/link.jpg": "../../../etc/passwd"})
    assert "would be written outside the extraction folder" in extract_error(archive, out)


def test_links_inside_the_archive_are_kept_as_the_image_they_point_to(out, tmp_path):
    entries = {**good_classes(), "class_1/notes/readme.txt": b"x"}
    archive = make_tar(
        tmp_path / "links.tar",
        entries,
        symlinks={
            "class_0/link.jpg": "image_0.jpg",
            "only_links/a.jpg": "../class_0/image_1.jpg",
            "only_links/chain.jpg": "a.jpg",  # a link to a link
            "class_1/to_folder.jpg": "notes",  # a link to a folder: not an image
            "class_1/dangling.jpg": "missing.jpg",
        },
        hardlinks={"only_links/b.jpg": "class_1/image_2.jpg"},
    )
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 4, "class_1": 3, "only_links": 3}
    assert (out["images"] / "class_0" / "link.jpg").read_bytes() == image_bytes(0)
    assert (out["images"] / "only_links" / "b.jpg").read_bytes() == image_bytes(1)
    assert not any(p.is_symlink() for p in out["images"].rglob("*"))  # copies: nothing points anywhere
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    assert "link to" in reasons["class_1/to_folder.jpg"] and "not a file" in reasons["class_1/to_folder.jpg"]
    assert "link to" in reasons["class_1/dangling.jpg"] and "missing.jpg" in reasons["class_1/dangling.jpg"]
    assert "class_1/notes/readme.txt" in reasons


def test_zip_symlink_inside_the_archive_is_kept(out, tmp_path):
    archive = make_zip(tmp_path / "links.zip", good_classes(), symlinks={"class_1/link.jpg": "../class_0/image_0.jpg"})
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 4}
    assert (out["images"] / "class_1" / "link.jpg").read_bytes() == image_bytes(0)


def test_many_links_to_a_big_file_count_against_the_size_limit(out, tmp_path):
    big = {"class_0/zeros.jpg": bytes(400_000)}
    links = {f"class_0/copy{i}.jpg": "zeros.jpg" for i in range(5)}
    archive = make_tar(tmp_path / "linkbomb.tar.gz", {**good_classes(), **big}, symlinks=links)
    assert "limit" in extract_error(archive, out, max_bytes=1_000_000)


def test_zip_over_the_size_limit_is_refused(out, tmp_path):
    bomb = make_zip(tmp_path / "bomb.zip", {**good_classes(), "class_0/zeros.jpg": bytes(2_000_000)})
    assert bomb.stat().st_size < 100_000  # compresses to almost nothing
    message = extract_error(bomb, out, max_bytes=1_000_000)
    assert "over the 1,000,000-byte limit" in message


def test_zip_whose_directory_lies_about_sizes_is_refused(out, tmp_path):
    bomb = make_zip(tmp_path / "liar.zip", {**good_classes(), "class_0/zeros.jpg": bytes(2_000_000)})
    data = bytearray(bomb.read_bytes())
    # Patch the central directory's uncompressed size of that entry (offset 24 of its header) to 10 bytes.
    header = data.find(b"class_0/zeros.jpg", data.find(b"PK\x01\x02")) - 46
    assert data[header : header + 4] == b"PK\x01\x02"
    data[header + 24 : header + 28] = (10).to_bytes(4, "little")
    bomb.write_bytes(bytes(data))
    # The declared total passes the limit; the entry is caught unpacking (zipfile stops at the declared
    # size and the CRC check fails), so only 10 bytes of it are ever written.
    message = extract_error(bomb, out, max_bytes=1_000_000)
    assert "is truncated or corrupt" in message and "CRC" in message


def test_tar_over_the_size_limit_is_refused(out, tmp_path):
    archive = make_tar(tmp_path / "big.tar.gz", {**good_classes(), "class_0/zeros.jpg": bytes(2_000_000)})
    assert "more than the 1,000,000-byte limit" in extract_error(archive, out, max_bytes=1_000_000)


class Zeros(io.RawIOBase):
    """A stream of zero bytes, so a big entry is written without holding it in memory."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_unpacking_to_far_more_than_its_size_is_refused_early(out, tmp_path, kind):
    """A 1 MB zip bomb wrote 1 GiB before its file was dropped: the 20 GiB limit alone let it. An archive may unpack
    to 100 times its size (64 MiB at least): a zip is refused before a byte is written (its directory declares the
    sizes), a tar.gz as soon as it passes the bound."""
    size = 200 * 2**20
    archive = tmp_path / f"bomb.{kind}"
    if kind == "zip":
        make_zip(archive, good_classes())
        with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf, zf.open("class_0/zeros.jpg", "w") as entry:
            for _ in range(size >> 20):
                entry.write(bytes(1 << 20))
    else:
        make_tar(archive, good_classes())
        with tarfile.open(tmp_path / "bomb.tar", "w") as tar:
            info = tarfile.TarInfo("class_0/zeros.jpg")
            info.size = size
            tar.addfile(info, io.BufferedReader(Zeros(size)))
            for name, data in good_classes().items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        with open(tmp_path / "bomb.tar", "rb") as raw, open(archive, "wb") as packed:
            import gzip

            with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as stream:
                while chunk := raw.read(1 << 20):
                    stream.write(chunk)
    assert archive.stat().st_size < 1_000_000
    message = extract_error(archive, out)
    assert "100 times its own size" in message and "67,108,864" in message, message


def test_many_tiny_entries_keep_metrics_data_json_small_and_list_them_all_in_data_images(out, tmp_path):
    """100,000 one-byte entries made the git-tracked metrics/data.json 10.6 MB: it keeps a count and the first
    entries; every one is listed in data/images/skipped_files.json (DVC keeps it with the images)."""
    from transfer.unpack.class_folders import SKIPPED_SAMPLE

    n = 3 * SKIPPED_SAMPLE
    entries = {**good_classes(), **{f"class_{i % 2}/notes/{i:05d}.txt": b"x" for i in range(n)}}
    report = run_extract(make_zip(tmp_path / "tiny.zip", entries), out)
    written = json.loads(out["report"].read_text())
    assert written["n_skipped_files"] == n and len(written["skipped_files"]) == SKIPPED_SAMPLE
    assert written["skipped_files"] == sorted(written["skipped_files"], key=lambda entry: entry["path"])
    assert out["report"].stat().st_size < 40_000
    everything = json.loads((out["images"] / "skipped_files.json").read_text())
    assert len(everything) == n and everything[:SKIPPED_SAMPLE] == written["skipped_files"]
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}


# --- odd and bad images --------------------------------------------------------------------------


def png16() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).save(out, "PNG")
    return out.getvalue()


def test_odd_images_kept_bad_ones_left_out_and_empty_class_reported(out, tmp_path):
    jpeg = image_bytes(1)
    big = io.BytesIO()
    Image.new("RGB", (8000, 8000), (200, 40, 40)).save(big, "JPEG")  # solid colour: tiny file, 64 Mpx
    kept = {
        "mixed/normal.jpg": jpeg,
        "mixed/png_named.jpg": image_bytes(1, "PNG"),
        "mixed/sixteen_bit.png": png16(),
        "mixed/rgba.png": image_bytes(1, "PNG", "RGBA"),
        "mixed/cmyk.jpg": image_bytes(1, mode="CMYK"),
        "mixed/gray.jpg": image_bytes(1, mode="L"),
        "mixed/huge.jpg": big.getvalue(),
        "mixed/picture.tif": image_bytes(1, "TIFF"),  # TIFF is decoded like the rest, everywhere
        "fine/a.jpg": image_bytes(2),
        "fine/b.jpg": image_bytes(2),
    }
    bad = {
        "mixed/zero.jpg": (b"", "not an image"),
        "mixed/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "mixed/text.jpg": (b"just some text\n", "not an image"),
        "mixed/icon.ico": (image_bytes(1, "ICO"), "ICO is not a supported format"),
        "all_bad/zero.jpg": (b"", "not an image"),
        "all_bad/text.jpg": (b"hello\n", "not an image"),
        "README.txt": (b"top-level stray file\n", "not inside a class folder"),
    }
    archive = make_zip(tmp_path / "odd.zip", {**kept, **{name: data for name, (data, _) in bad.items()}})
    report = run_extract(archive, out)

    assert report["images_per_class"] == {"fine": 2, "mixed": 8}
    assert report["empty_classes"] == ["all_bad"]
    assert not (out["images"] / "all_bad").exists()
    assert {f"{d}/{f}" for d, files in listing(out["images"]).items() for f in files} == set(kept)
    for name, data in kept.items():
        assert (out["images"] / name).read_bytes() == data  # moved unchanged, not re-encoded
    reasons = {f["path"]: f["reason"] for f in report["skipped_files"]}
    assert set(reasons) == set(bad)
    for name, (_, why) in bad.items():
        assert why.lower() in reasons[name].lower(), (name, reasons[name])
    assert json.loads(out["report"].read_text())["empty_classes"] == ["all_bad"]


def test_fewer_than_two_usable_classes(out, tmp_path):
    archive = make_tar(
        tmp_path / "one.tar", {**good_classes(1), "broken/x.jpg": b"", "BACKGROUND_Google/a.jpg": image_bytes(2)}
    )
    message = extract_error(archive, out)
    assert "1 class folder(s) with valid images after data.exclude; a classifier needs at least 2" in message


def test_hidden_and_macos_files_are_listed_with_their_reason(out, tmp_path, capsys):
    archive = make_zip(
        tmp_path / "hidden.zip",
        {
            **good_classes(),
            "class_0/.DS_Store": b"\0\0\0\1Bud1",
            "class_0/._image_0.jpg": archive_bytes.APPLEDOUBLE,
            "class_1/.own_photo.jpg": image_bytes(1),
            "class_1/Thumbs.db": b"\xd0\xcf\x11\xe0",
            ".hidden/a.jpg": image_bytes(1),
            "__MACOSX/class_0/._image_1.jpg": archive_bytes.APPLEDOUBLE,
        },
    )
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    assert set(reasons) == {
        "class_0/.DS_Store",
        "class_0/._image_0.jpg",
        "class_1/.own_photo.jpg",
        "class_1/Thumbs.db",
        ".hidden/a.jpg",
        "__MACOSX/class_0/._image_1.jpg",
    }
    assert "macOS" in reasons["class_0/.DS_Store"] and "AppleDouble" in reasons["class_0/._image_0.jpg"]
    assert "hidden" in reasons["class_1/.own_photo.jpg"] and "rename" in reasons["class_1/.own_photo.jpg"]
    assert "hidden" in reasons[".hidden/a.jpg"] and "macOS" in reasons["__MACOSX/class_0/._image_1.jpg"]
    assert "6 files left out" in capsys.readouterr().out  # the count is the list's length


# --- class folders as Keras and torchvision read them (issue 19) ---------------------------------


def subfolder_classes(prefix: str, cats: int) -> dict[str, bytes]:
    """cats/{indoor,outdoor}/ beside dogs/ and birds/ holding their images directly."""
    files = {f"{prefix}cats/{where}/{i}.jpg": image_bytes(1) for where in ("indoor", "outdoor") for i in range(cats)}
    files.update(
        {f"{prefix}{name}/{i}.jpg": image_bytes(c) for c, name in ((2, "dogs"), (3, "birds")) for i in range(3)}
    )
    return files


@pytest.mark.parametrize("prefix", ["", "animals/", "data/animals/"])
@pytest.mark.parametrize("cats", [2, 5], ids=["cats-fewer", "cats-more"])
def test_a_class_with_subfolders_is_a_class_not_the_root(out, tmp_path, prefix, cats):
    archive = make_zip(tmp_path / "animals.zip", {**subfolder_classes(prefix, cats), f"{prefix}README.md": b"#"})
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"birds": 3, "cats": 2 * cats, "dogs": 3}
    assert report["class_root"] == f"animals.zip: {prefix or 'the top folder'}".rstrip()
    assert (out["images"] / "cats" / "indoor" / "0.jpg").is_file()  # the class keeps its sub-folders
    assert [entry["path"] for entry in report["skipped_files"]] == ["README.md"]


def test_a_class_with_subfolders_inside_a_nested_archive(out, tmp_path):
    inner = nested_archive(".tar.gz", subfolder_classes("animals/", 5))
    archive = make_zip(tmp_path / "outer.zip", {"dataset/animals.tar.gz": inner, "dataset/show.m": b"%"})
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"birds": 3, "cats": 10, "dogs": 3}
    assert report["class_root"] == "outer.zip > dataset/animals.tar.gz: animals/"


# --- formats the stage does not read, named ------------------------------------------------------


@pytest.mark.parametrize(
    "name, body, what",
    [
        ("data.7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(2000), "7-Zip"),
        ("data.rar", b"Rar!\x1a\x07\x01\x00" + bytes(2000), "RAR"),
        ("photo.jpg.gz", __import__("gzip").compress(image_bytes(0)), "a single compressed file"),
    ],
)
def test_a_format_the_stage_does_not_read_is_named(out, tmp_path, name, body, what):
    archive = tmp_path / name
    archive.write_bytes(body)
    message = extract_error(archive, out)
    assert what in message and "is not a zip or tar archive" in message and str(archive) in message


# --- a file-size limit (EFBIG, as a full disk) while unpacking ------------------------------------


@pytest.mark.e2e
def test_file_size_limit_while_extracting_is_one_clear_error(tmp_path):
    import resource
    import subprocess

    from synthetic.repos import write_params
    from tests.helpers import stage_command

    (tmp_path / "data" / "raw").mkdir(parents=True)
    make_tar(tmp_path / "data" / "raw" / "big.tar.gz", {**good_classes(), "class_0/big.jpg": bytes(300_000)})
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    write_params(tmp_path, raw)
    command, env = stage_command("extract", "data/raw", "data/images", "metrics/data.json")
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # noqa: E731
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, preexec_fn=limit)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: writing in data" in result.stderr and "file-size limit" in result.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw"]  # no scratch, no images
    assert not (tmp_path / "metrics").exists()


# --- the stage's command line -------------------------------------------------------------------


def run_extract_stage(cwd: Path, exclude: list[str]):
    """`python -m stages.extract data/raw data/images metrics/data.json` in cwd with data.exclude set."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["exclude"] = exclude
    return run_stage("extract", "data/raw", "data/images", "metrics/data.json", cwd=cwd, params=raw)


@pytest.mark.e2e
def test_cli_extracts_the_one_archive_in_raw(archives, tmp_path):
    archive, expected = archives["official"]
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / archive.name).symlink_to(archive)
    result = run_extract_stage(tmp_path, ["BACKGROUND_Google"])
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "metrics" / "data.json").read_text())
    assert report["images_per_class"] == expected["images_per_class"]
    assert report["excluded"] == ["BACKGROUND_Google"]


@pytest.mark.e2e
def test_cli_bad_archive_exits_non_zero_with_message(tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    make_tar(tmp_path / "data" / "raw" / "evil.tar", good_classes(), symlinks={"class_0/x.jpg": "/etc/passwd"})
    result = run_extract_stage(tmp_path, [])
    assert result.returncode == 1
    assert "error:" in result.stderr and "refusing an unsafe entry" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "images").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("files", [[], ["a.zip", "b.zip"]])
def test_cli_needs_exactly_one_archive(tmp_path, files):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    for name in files:
        (tmp_path / "data" / "raw" / name).write_bytes(b"x")
    result = run_extract_stage(tmp_path, [])
    assert result.returncode == 1
    assert f"expected exactly one archive in data/raw, found {len(files)}" in result.stderr


# --- the official zip as it really is, and archives as users make them (issue 10) ---------------


def test_official_fixture_is_the_real_listing(archives):
    archive, _ = archives["official"]
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == datasets.OFFICIAL_LISTING  # all seven entries, in the real order
        for name in zf.namelist():
            if name.startswith("__MACOSX/"):
                assert zf.read(name)[:4] == b"\x00\x05\x16\x07"  # AppleDouble
        assert b"show_annotation" in zf.read("caltech-101/show_annotation.m")
        with tarfile.open(fileobj=io.BytesIO(zf.read("caltech-101/101_ObjectCategories.tar.gz"))) as inner:
            assert "101_ObjectCategories/BACKGROUND_Google/tmp" in inner.getnames()
        with tarfile.open(fileobj=io.BytesIO(zf.read("caltech-101/Annotations.tar"))) as annotations:
            assert all(name.startswith("Annotations") for name in annotations.getnames())


def test_official_zip_plain_file_beside_the_nested_archives(archives, out):
    """show_annotation.m sits beside the archives in caltech-101/: that folder is not a class folder."""
    archive, expected = archives["official"]
    report = run_extract(archive, out)
    assert report["class_root"] == "caltech-101.zip > caltech-101/101_ObjectCategories.tar.gz: 101_ObjectCategories/"
    assert report["images_per_class"] == expected["images_per_class"]
    assert not any(entry["path"].split("/")[-1] == "tmp" for entry in report["skipped_files"])  # excluded class


def test_legacy_fixture_holds_the_stray_tmp(archives):
    archive, _ = archives["legacy"]
    with tarfile.open(archive) as tar:
        assert "101_ObjectCategories/BACKGROUND_Google/tmp" in tar.getnames()


@pytest.mark.parametrize("beside", ["LICENSE.txt", "README.txt", "show_annotation.m", "notes"])
@pytest.mark.parametrize("wrapper", ["", "flower_photos/"], ids=["top", "wrapper"])
def test_plain_file_beside_the_class_folders(out, tmp_path, beside, wrapper):
    archive = make_tar(
        tmp_path / "flowers.tgz", {f"{wrapper}{beside}": b"licensed CC-BY\n", **good_classes(3, prefix=wrapper)}
    )
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3, "class_2": 3}
    assert report["skipped_files"] == [{"path": beside, "reason": "not inside a class folder"}]


def test_flower_photos_layout(out, tmp_path):
    archive = tmp_path / "flower_photos.tgz"
    expected = datasets.make_archive(archive, layout="flowers", n_classes=3, per_class=4, size=32)
    with tarfile.open(archive) as tar:
        assert "flower_photos/LICENSE.txt" in tar.getnames()
    report = run_extract(archive, out)
    assert report["images_per_class"] == expected["images_per_class"]
    assert sorted(entry["path"] for entry in report["skipped_files"]) == expected["skipped"]


def utf8_names(images: Path) -> list[str]:
    """Every name under images, checked as DVC reads them: valid UTF-8 bytes, NFC."""
    names = []
    for path in images.rglob("*"):
        raw = os.fsencode(path.name)
        name = raw.decode("utf-8")  # raises for Latin-1 bytes, as DVC's "surrogates not allowed" does
        assert name == unicodedata.normalize("NFC", name), name
        names.append(name)
    return names


@pytest.mark.parametrize("layout", ["infozip", "windows", "macos", "latin1"])
def test_names_as_tools_write_them(out, tmp_path, layout):
    archive = tmp_path / ("names.tar" if layout == "latin1" else "names.zip")
    expected = datasets.make_archive(archive, layout=layout, n_classes=3, per_class=4, size=32)
    if layout != "latin1":  # the fixture really is what the tool writes
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
        assert not any(info.flag_bits & 0x800 for info in infos)  # no UTF-8 flag
        assert any(info.filename.endswith(("/", "\\")) for info in infos)  # directory entries
        if layout == "windows":
            assert any("\\" in info.filename for info in infos) and infos[0].create_system == 0
        if layout == "macos":
            assert any(info.filename.startswith("__MACOSX/") for info in infos)
    else:
        assert "café".encode("latin-1") in archive.read_bytes() and "café".encode() not in archive.read_bytes()
    report = run_extract(archive, out)
    assert report["images_per_class"] == expected["images_per_class"]  # café, Ärger... not caf├⌐
    assert sorted(entry["path"] for entry in report["skipped_files"]) == sorted(expected["skipped"])
    names = utf8_names(out["images"])
    assert set(expected["images_per_class"]) <= set(names)
    assert json.loads(out["report"].read_text(encoding="utf-8"))["images_per_class"] == expected["images_per_class"]


def test_non_utf8_bytes_become_valid_utf8(out, tmp_path):
    """Bytes that are no text in any encoding still give a name DVC can take (no surrogates)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name, body in {**good_classes(), "class_0/\x81\x8d\x9d.jpg": image_bytes(0)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    archive = tmp_path / "odd.tar"
    archive.write_bytes(data.getvalue())
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 4, "class_1": 3}
    assert len(utf8_names(out["images"])) == 9


def test_windows_zip_with_backslashes_and_directory_entries(out, tmp_path):
    files = {f"photos/{name}": data for name, data in good_classes().items()}
    archive = archive_bytes.write_zip(tmp_path / "win.zip", archive_bytes.zip_entries(files, "windows"))
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist()[:2] == ["photos\\", "photos\\class_0\\"]
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
    assert listing(out["images"]) == {
        "class_0": ["image_0.jpg", "image_1.jpg", "image_2.jpg"],
        "class_1": ["image_0.jpg", "image_1.jpg", "image_2.jpg"],
    }


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_name_too_long_for_the_file_system_is_left_out_with_its_reason(out, tmp_path, kind):
    long_name = "class_1/" + "ä" * 140 + ".jpg"  # 284 bytes in UTF-8: over the 255-byte limit
    long_folder = "x" * 256 + "/image.jpg"
    entries = {**good_classes(), long_name: image_bytes(1), f"class_0/{long_folder}": image_bytes(0)}
    archive = (make_zip if kind == "zip" else make_tar)(tmp_path / f"long.{kind}", entries)
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    assert set(reasons) == {long_name, f"class_0/{long_folder}"}
    assert all("longer than 255 bytes" in reason for reason in reasons.values())


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_path_too_long_for_the_file_system_is_left_out_with_its_reason(out, tmp_path, kind):
    """Every name under 255 bytes, the whole path over the 4,096 Linux takes: extract crashed (ENAMETOOLONG)."""
    deep = "class_0/" + "/".join(f"{i:02d}" + "d" * 240 for i in range(18)) + "/image.jpg"  # 4,425 bytes
    entries = {**good_classes(), deep: image_bytes(0)}
    archive = (make_zip if kind == "zip" else make_tar)(tmp_path / f"deep.{kind}", entries)
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    assert list(reasons) == [deep] and "path longer than" in reasons[deep], reasons
    # A hard link to such a path (3,400 bytes: past the bound, within PATH_MAX) is left out too, not followed.
    if kind == "tar":
        mid = "class_0/" + "/".join(f"{i:02d}" + "d" * 240 for i in range(14)) + "/image.jpg"
        archive = make_tar(tmp_path / "deep-link.tar", {**good_classes(), mid: b"x"}, hardlinks={"class_1/l.jpg": mid})
        report = run_extract(archive, out)
        reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
        assert set(reasons) == {mid, "class_1/l.jpg"} and "not a file in the archive" in reasons["class_1/l.jpg"]


def test_a_name_the_file_system_refuses_is_left_out(out, tmp_path):
    # A file and a folder of the same name: the second cannot be created; the stage goes on.
    archive = make_tar(
        tmp_path / "clash.tar", {**good_classes(), "class_0/dup": b"x", "class_0/dup/a.jpg": image_bytes(0)}
    )
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    assert "the file system refused the name" in reasons["class_0/dup/a.jpg"]


@pytest.mark.parametrize("typed", ["NFC", "NFD"])
def test_exclude_matches_a_class_named_in_nfd(out, tmp_path, typed, capsys):
    files = {"café/a.jpg": image_bytes(0), "café/b.jpg": image_bytes(0), **good_classes()}
    archive = archive_bytes.write_zip(tmp_path / "mac.zip", archive_bytes.zip_entries(files, "macos"))
    with zipfile.ZipFile(archive) as zf:
        assert "cafe\u0301/a.jpg" in [info.filename.encode("cp437").decode() for info in zf.infolist()]
    report = run_extract(archive, out, exclude=(unicodedata.normalize(typed, "café"),))
    assert report["excluded"] == ["café"]
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
    assert "not a class folder" not in capsys.readouterr().err


def test_encrypted_zip_is_a_clear_error(out, tmp_path):
    entries = archive_bytes.zip_entries(good_classes(), "infozip", password=b"secret")
    archive = archive_bytes.write_zip(tmp_path / "locked.zip", entries)
    with zipfile.ZipFile(archive) as zf:  # a real ZipCrypto zip: right password opens it
        assert zf.read("class_0/image_0.jpg", pwd=b"secret") == image_bytes(0)
    message = extract_error(archive, out)
    assert "is encrypted" in message and "password" in message and "without one" in message


NESTED_KINDS = {".zip": None, ".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}


def nested_archive(suffix: str, files: dict[str, bytes]) -> bytes:
    if suffix == ".zip":
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w") as zf:
            for name, body in files.items():
                zf.writestr(name, body)
        return data.getvalue()
    return archive_bytes.tar_bytes(files, NESTED_KINDS[suffix])


@pytest.mark.parametrize("suffix", list(NESTED_KINDS))
def test_zip_whose_only_content_is_a_nested_archive(out, tmp_path, suffix):
    inner = nested_archive(suffix, good_classes(3, prefix="images/"))
    archive = make_zip(tmp_path / "outer.zip", {f"images{suffix}": inner})
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3, "class_2": 3}
    assert report["class_root"] == f"outer.zip > images{suffix}: images/"


def test_nested_archive_one_wrapper_down_beside_a_readme(out, tmp_path):
    inner = nested_archive(".tar.xz", good_classes())
    archive = make_tar(
        tmp_path / "outer.tar.gz",
        {
            "dataset/README.md": b"# data\n",
            "dataset/data.tar.xz": inner,
            "dataset/labels.tar": nested_archive(".tar", {"a/b.txt": b"x"}),
        },
    )
    assert run_extract(archive, out)["images_per_class"] == {"class_0": 3, "class_1": 3}


def test_archive_in_an_archive_in_an_archive(out, tmp_path):
    innermost = nested_archive(".tar.gz", good_classes(prefix="101/"))
    middle = nested_archive(".zip", {"inner/101.tar.gz": innermost})
    archive = make_zip(tmp_path / "outer.zip", {"middle.zip": middle, "show.m": b"%"})
    report = run_extract(archive, out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
    assert report["class_root"] == "outer.zip > middle.zip > inner/101.tar.gz: 101/"


def test_the_folder_holding_most_images_wins(out, tmp_path):
    entries = {
        **good_classes(3, 4, prefix="dataset/images/"),
        **good_classes(1, 2, prefix="dataset/samples/"),
        "dataset/thumbs.tar": nested_archive(".tar", good_classes(2, 1)),
    }
    report = run_extract(make_zip(tmp_path / "mixed.zip", entries), out)
    assert report["images_per_class"] == {"class_0": 4, "class_1": 4, "class_2": 4}
    assert report["class_root"] == "mixed.zip: dataset/images/"


def test_when_it_cannot_decide_the_error_lists_what_it_found(out, tmp_path):
    same = {**good_classes(prefix="train/"), **good_classes(prefix="copy/")}
    message = extract_error(make_zip(tmp_path / "twice.zip", same), out)
    assert "cannot tell which folder holds the classes" in message
    assert "twice.zip: copy/ (2 subfolder(s) holding 6 image(s))" in message
    assert "twice.zip: train/ (2 subfolder(s) holding 6 image(s))" in message

    nothing = make_zip(
        tmp_path / "docs.zip",
        {
            "caltech-101/show_annotation.m": b"%",
            "caltech-101/notes.tar.xz": nested_archive(".tar.xz", {"a/b.txt": b"x"}),
            "caltech-101/broken.tar.gz": b"\x1f\x8b not really",
        },
    )
    message = extract_error(nothing, out)
    assert "holds no class folders" in message
    assert "docs.zip > caltech-101/notes.tar.xz (no images)" in message
    assert "docs.zip > caltech-101/broken.tar.gz (cannot be read" in message


# --- Pillow's warnings name the file (issue 19) ----------------------------------------------------


def jpeg_with_corrupt_exif() -> bytes:
    """A JPEG whose EXIF block has a tag whose data lies past the block's end, as broken camera software writes."""
    import struct

    tiff = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<HHHII", 1, 0x010E, 2, 1000, 0x2000) + bytes(4)
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(out, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return out.getvalue()


def test_pillow_warnings_name_the_file_in_extract_and_in_the_decoder_workers(out, tmp_path, capfd):
    from transfer.features.decode_pool import ImageDecoder

    archive = make_zip(tmp_path / "exif.zip", {**good_classes(), "class_0/broken_exif.jpg": jpeg_with_corrupt_exif()})
    report = run_extract(archive, out, exclude=())
    assert report["images_per_class"] == {"class_0": 4, "class_1": 3}  # the pixels are fine: kept
    warned = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warned and all("class_0/broken_exif.jpg: " in line for line in warned), warned
    path = out["images"] / "class_0" / "broken_exif.jpg"
    with ImageDecoder(32, batch_size=2, workers=1) as decoder:
        list(decoder.batches([str(path)]))
    err = capfd.readouterr().err
    assert f"warning: {path}: " in err and "UserWarning" not in err


# --- link targets, long names and colons (issue 26) ----------------------------------------------


def test_zip_symlink_with_a_huge_target_is_left_out_without_reading_it(out, tmp_path):
    # A 400 MB target compresses to a few hundred KB; it was read whole (2.1 GB of memory) and printed.
    archive = make_zip(tmp_path / "huge.zip", good_classes(), symlinks={"class_0/link.jpg": "a" * 3_000_000})
    report = run_extract(archive, out, max_bytes=10_000_000)
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    assert "link target longer than" in reasons["class_0/link.jpg"]
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}


def test_link_targets_count_against_the_unpack_limit(out, tmp_path):
    links = {f"class_0/link{i}.jpg": "b" * 4000 for i in range(100)}  # 400 kB of link targets, 6 kB of images
    archive = make_tar(tmp_path / "links.tar.gz", good_classes(), symlinks=links)
    assert "limit" in extract_error(archive, out, max_bytes=200_000)


@pytest.mark.parametrize("suffix", ["zip", "tar"])
def test_link_whose_target_name_is_too_long_is_left_out_with_its_reason(out, tmp_path, suffix):
    maker = make_zip if suffix == "zip" else make_tar
    archive = maker(tmp_path / f"long.{suffix}", good_classes(), symlinks={"class_0/link.jpg": "t" * 300 + ".jpg"})
    report = run_extract(archive, out)
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    assert "longer than 255 bytes" in reasons["class_0/link.jpg"]
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}


@pytest.mark.parametrize("suffix", ["zip", "tar"])
def test_a_colon_in_the_top_folder_is_a_name_not_an_escape(out, tmp_path, suffix):
    # macOS writes a `/` typed in Finder as `:`; only a drive letter (`C:`) would lead elsewhere (on Windows).
    maker = make_zip if suffix == "zip" else make_tar
    drive = maker(tmp_path / f"drive.{suffix}", {**good_classes(), "C:/evil.jpg": image_bytes(3)})
    assert "would be written outside" in extract_error(drive, out)
    report = run_extract(maker(tmp_path / f"fotos.{suffix}", good_classes(prefix="Fotos 2024:05/")), out)
    assert report["images_per_class"] == {"class_0": 3, "class_1": 3}
