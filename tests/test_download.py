"""stages/download.py against a local HTTP server with faults: resume, retries, errors, checksums, Ctrl-C."""

from __future__ import annotations

import hashlib
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from stages import download
from synthetic.repos import ROOT, md5_of, write_params
from tests import helpers
from tests.helpers import run_stage, stage_command, wait_for
from transfer.core.errors import StageError
from transfer.fetch import downloads


def zip_body(seed: int = 0, size: int = 300_000) -> bytes:
    """A real zip (the stage checks that a file is a whole archive before it keeps it) of one random, so
    incompressible, file."""
    import io
    import zipfile

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("class_0/image.jpg", random.Random(seed).randbytes(size))
    return data.getvalue()


BODY = zip_body()
MD5 = hashlib.md5(BODY).hexdigest()
FAST = dict(timeout=1, retries=1, backoff=0)


@pytest.fixture
def paths(tmp_path):
    return {"dest": tmp_path / "raw" / "archive.zip", "partial": tmp_path / ".partial"}


def fetch(url: str, paths: dict, md5: str | None = MD5, **options):
    return helpers.fetch(url, paths["dest"], md5, paths["partial"], **{**FAST, **options})


def partial_files(paths: dict) -> list[Path]:
    return sorted(paths["partial"].glob("*")) if paths["partial"].exists() else []


def assert_nothing_at_final_path(paths: dict) -> None:
    assert not paths["dest"].exists()
    assert not paths["dest"].parent.exists() or list(paths["dest"].parent.iterdir()) == []


def ranges(server, route: str) -> list[str | None]:
    return [request["range"] for request in server.routes[route].requests]


def test_download_streams_with_progress_bar(server, paths, capsys):
    url = server.add("/ok/archive.zip", BODY)
    assert fetch(url, paths) == paths["dest"]
    assert md5_of(paths["dest"]) == MD5
    assert partial_files(paths) == []  # the partial file became the archive
    err = capsys.readouterr().err
    assert "100%" in err and "293k" in err  # tqdm progress bar, in bytes


def test_archive_name_drops_query_string():
    url = "https://data.caltech.edu/records/x/files/caltech-101.zip?download=1"
    assert downloads.archive_name(url) == "caltech-101.zip"
    assert downloads.archive_name("file:///data/my%20set.tar.gz") == "my set.tar.gz"
    assert downloads.archive_name("/data/own.tar") == "own.tar"
    assert downloads.archive_name("https://example.com/") is None  # the server's Content-Disposition names it
    assert downloads.archive_name("https://example.com") is None


def test_interrupted_transfer_resumes_with_range_request(server, paths, capsys):
    url = server.add("/cut/archive.zip", BODY, cut_after=100_000)
    fetch(url, paths)
    first, second = ranges(server, "/cut/archive.zip")
    assert first is None
    start = int(re.fullmatch(r"bytes=(\d+)-", second).group(1))
    assert 0 < start <= 100_000  # the bytes received before the cut were kept
    assert md5_of(paths["dest"]) == MD5
    assert "Connection broken; retrying in 0 s (1/1)" in capsys.readouterr().err


def test_transfer_cut_several_times_makes_progress_each_time(server, paths):
    url = server.add("/cuts/archive.zip", BODY, cut_after=60_000, cuts=4)
    fetch(url, paths, retries=1)  # retries count failures in a row without progress
    seen = ranges(server, "/cuts/archive.zip")
    assert seen == [None, "bytes=60000-", "bytes=120000-", "bytes=180000-", "bytes=240000-"]  # no byte lost
    assert md5_of(paths["dest"]) == MD5


def test_server_ignoring_range_starts_over(server, paths, capsys):
    url = server.add("/norange/archive.zip", BODY, cut_after=100_000, ignore_range=True)
    fetch(url, paths)
    first, second = ranges(server, "/norange/archive.zip")
    assert first is None and second.startswith("bytes=")  # asked to resume, got the whole file
    assert md5_of(paths["dest"]) == MD5  # not the old prefix plus the whole file
    assert "does not support resuming; starting over" in capsys.readouterr().err


def test_stale_partial_longer_than_file_starts_over(server, paths):
    longer = zip_body(1, 200_000)
    url = server.add("/stale/archive.zip", longer, cut_after=150_000)
    with pytest.raises(StageError, match="partial file .* is kept"):
        fetch(url, paths, md5=hashlib.md5(longer).hexdigest(), retries=0)
    # The file on the server is replaced by a shorter one: resuming past its end gets HTTP 416.
    shorter = zip_body(2, 50_000)
    server.add("/stale/archive.zip", shorter)
    fetch(url, paths, md5=hashlib.md5(shorter).hexdigest())
    assert ranges(server, "/stale/archive.zip")[0].startswith("bytes=")
    assert md5_of(paths["dest"]) == hashlib.md5(shorter).hexdigest()


def test_404_is_not_retried(server, paths):
    url = server.base + "/missing/archive.zip"
    with pytest.raises(StageError) as caught:
        fetch(url, paths, retries=3)
    assert url in str(caught.value) and "HTTP 404" in str(caught.value)
    assert_nothing_at_final_path(paths)


def test_500_is_retried_then_a_clear_error(server, paths):
    url = server.add("/error/archive.zip", BODY, status=500)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, retries=2)
    assert len(server.routes["/error/archive.zip"].requests) == 3
    assert f"could not download {url} after 3 attempts: HTTP 500" in str(caught.value)
    assert_nothing_at_final_path(paths)


def test_500_then_recovery_succeeds(server, paths):
    url = server.add("/flaky/archive.zip", BODY, status=503)
    route = server.routes["/flaky/archive.zip"]
    with pytest.raises(StageError, match="HTTP 503"):
        fetch(url, paths, retries=0)
    route.status = 200
    fetch(url, paths)
    assert md5_of(paths["dest"]) == MD5


def test_connection_refused(paths):
    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/archive.zip"
    with pytest.raises(StageError) as caught:
        fetch(url, paths)
    assert f"could not download {url} after 2 attempts: Connection refused" in str(caught.value)
    assert_nothing_at_final_path(paths)


def test_stalled_server_times_out_and_retries(server, paths):
    url = server.add("/stall/archive.zip", BODY, stall=5)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, timeout=0.5, retries=1)
    assert len(server.routes["/stall/archive.zip"].requests) == 2
    assert f"could not download {url} after 2 attempts" in str(caught.value)
    assert "timed out" in str(caught.value)
    assert_nothing_at_final_path(paths)


def test_invalid_url_is_a_clear_error(paths):
    with pytest.raises(StageError, match="could not download http://"):
        fetch("http:///archive.zip", paths)
    assert_nothing_at_final_path(paths)


def test_checksum_mismatch(server, paths):
    url = server.add("/wrong/archive.zip", BODY)
    expected = "0" * 32
    with pytest.raises(StageError) as caught:
        fetch(url, paths, md5=expected)
    message = str(caught.value)
    assert url in message and expected in message and MD5 in message
    assert_nothing_at_final_path(paths)
    assert partial_files(paths) == []  # a wrong file is not resumed next time


def test_md5_null_warns_and_keeps_file(server, paths, capsys):
    url = server.add("/nomd5/archive.zip", BODY)
    fetch(url, paths, md5=None)
    assert md5_of(paths["dest"]) == MD5
    assert f"warning: data.md5 is null, so {url} is not verified (its md5 is {MD5})" in capsys.readouterr().err


def test_local_path_and_file_url(tmp_path, paths):
    source = tmp_path / "source dir" / "archive.zip"
    source.parent.mkdir()
    source.write_bytes(BODY)
    fetch(str(source), paths)
    assert md5_of(paths["dest"]) == MD5
    paths["dest"].unlink()
    fetch(source.as_uri(), paths)  # file:///.../source%20dir/archive.zip
    assert md5_of(paths["dest"]) == MD5
    assert source.read_bytes() == BODY  # copied, not moved
    assert partial_files(paths) == []


def test_the_source_stage_links_a_path_and_its_file_url_to_the_same_archive(tmp_path):
    """data/source, what DVC hashes, is the same link for either spelling of data.url: DVC follows the same file
    (replaced in place, under `dvc status` and `dvc repro`: tests/test_local_archive.py, with a path)."""
    from stages.source import write_source

    archive = tmp_path / "source dir" / "archive.zip"
    archive.parent.mkdir()
    archive.write_bytes(BODY)
    write_source(str(archive), tmp_path / "a" / "source")
    write_source(archive.as_uri(), tmp_path / "b" / "source")  # file:///.../source%20dir/archive.zip
    assert (tmp_path / "a" / "source").readlink() == (tmp_path / "b" / "source").readlink() == archive


def test_local_path_missing_or_wrong(tmp_path, paths):
    with pytest.raises(StageError, match="not a file"):
        fetch(str(tmp_path / "nope.zip"), paths)
    source = tmp_path / "archive.zip"
    source.write_bytes(BODY[:1000])
    with pytest.raises(StageError, match="checksum mismatch"):
        fetch(str(source), paths)
    assert_nothing_at_final_path(paths)
    with pytest.raises(StageError, match="unsupported scheme 'ftp'"):
        fetch("ftp://example.com/archive.zip", paths)


# --- the stage's command line -------------------------------------------------------------------


def stage_params(url: str, md5: str | None) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(url=url, md5=md5)
    return raw


@pytest.mark.e2e
def test_cli_failure_exits_non_zero_with_message_and_no_file(server, tmp_path):
    url = server.add("/cli/archive.zip", BODY, status=500)
    cwd = tmp_path
    (cwd / "data" / "raw").mkdir(parents=True)
    (cwd / "data" / "raw" / "older.zip").write_bytes(b"from another data.url")
    params = stage_params(url, MD5)
    result = run_stage("download", "data/raw", "--retries", "1", "--timeout", "1", cwd=cwd, params=params)
    assert result.returncode == 1
    assert f"error: could not download {url} after 2 attempts: HTTP 500" in result.stderr
    assert "Traceback" not in result.stderr
    assert list((cwd / "data" / "raw").iterdir()) == []


@pytest.mark.e2e
def test_cli_success(server, tmp_path):
    url = server.add("/cli-ok/caltech-101.zip", BODY)
    cwd = tmp_path
    result = run_stage("download", "data/raw", "--retries", "0", cwd=cwd, params=stage_params(url + "?download=1", MD5))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (cwd / "data" / "raw").iterdir()] == ["caltech-101.zip"]
    assert md5_of(cwd / "data" / "raw" / "caltech-101.zip") == MD5


@pytest.mark.e2e
def test_ctrl_c_keeps_partial_and_next_run_resumes(server, tmp_path):
    body = zip_body(2, 2_000_000)
    url = server.add("/slow/archive.zip", body, bytes_per_second=250_000)
    route = server.routes["/slow/archive.zip"]
    cwd = tmp_path
    write_params(cwd, stage_params(url, hashlib.md5(body).hexdigest()))
    partial_dir = cwd / "data" / ".partial"
    command, env = stage_command("download", "data/raw", "--timeout", "5", "--retries", "0")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in partial_dir.glob("*.part")), "bytes arrive", 60, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "interrupted" in stderr and "Traceback" not in stderr
    (partial,) = partial_dir.glob("*.part")
    kept = partial.stat().st_size
    assert 0 < kept < len(body)
    assert list((cwd / "data" / "raw").iterdir()) == []  # nothing at the final path

    route.bytes_per_second = None
    result = run_stage("download", "data/raw", "--timeout", "5", "--retries", "0", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert ranges(server, "/slow/archive.zip") == [None, f"bytes={kept}-"]
    assert md5_of(cwd / "data" / "raw" / "archive.zip") == hashlib.md5(body).hexdigest()
    assert list(partial_dir.iterdir()) == []


# --- repository servers, bad answers and no network (issue 10) -----------------------------------


def test_redirect_to_a_signed_url_cut_halfway_resumes(server, paths):
    """What data.caltech.edu-like servers do: ?download=1 answers 302 to a signed URL with its own query
    string; the transfer is cut halfway; the retry goes through the redirect again and resumes."""
    server.add("/signed/caltech-101.zip", BODY, cut_after=len(BODY) // 2)
    url = server.add(
        "/records/abc/files/caltech-101.zip",
        b"",
        redirect="/signed/caltech-101.zip?X-Amz-Expires=60&X-Amz-Signature=0f3e",
    )
    fetch(url + "?download=1", paths)
    assert md5_of(paths["dest"]) == MD5
    assert [r["query"] for r in server.routes["/records/abc/files/caltech-101.zip"].requests] == ["download=1"] * 2
    signed = server.routes["/signed/caltech-101.zip"].requests
    assert [r["query"] for r in signed] == ["X-Amz-Expires=60&X-Amz-Signature=0f3e"] * 2
    start = int(re.fullmatch(r"bytes=(\d+)-", signed[1]["range"]).group(1))
    assert 0 < start <= len(BODY) // 2  # resumed, not started over


@pytest.mark.parametrize("md5", [None, "0123456789abcdef0123456789abcdef"], ids=["md5-null", "md5-set"])
def test_html_page_answered_with_200_never_sticks(server, paths, md5):
    page = b"<!DOCTYPE html>\n<html><body>Please sign in to download this file.</body></html>\n" * 20
    url = server.add(f"/html-{bool(md5)}/archive.zip", page)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, md5=md5)
    message = str(caught.value)
    assert url in message
    if md5 is None:
        assert "HTML page" in message and "not a zip or tar archive" in message and "downloads again" in message
    else:
        assert "checksum mismatch" in message
    assert_nothing_at_final_path(paths)
    assert partial_files(paths) == []  # nothing to resume either
    server.add(f"/html-{bool(md5)}/archive.zip", BODY)  # the server is fixed: the next run fetches again
    fetch(url, paths, md5=None)
    assert md5_of(paths["dest"]) == MD5


def test_non_archive_without_md5_is_refused_but_archives_of_every_kind_pass(tmp_path, paths):
    import bz2
    import gzip
    import io
    import lzma
    import tarfile

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("a/b.jpg")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    kinds = {
        "zip": BODY,
        "tar": tar.getvalue(),
        "gz": gzip.compress(tar.getvalue()),
        "bz2": bz2.compress(tar.getvalue()),
        "xz": lzma.compress(tar.getvalue()),
    }
    for kind, body in kinds.items():
        source = tmp_path / f"source.{kind}"
        source.write_bytes(body)
        helpers.fetch(str(source), tmp_path / "out" / kind, None, paths["partial"])
        assert (tmp_path / "out" / kind).read_bytes() == body
    text = tmp_path / "notes.zip"
    text.write_text("just text, named .zip\n")
    with pytest.raises(StageError, match="not a zip or tar archive"):
        fetch(str(text), paths, md5=None)
    assert_nothing_at_final_path(paths)


def test_name_from_content_disposition_when_the_url_names_no_file(server, tmp_path):
    raw, partial = tmp_path / "raw", tmp_path / ".partial"
    server.add("/get/", BODY, headers={"Content-Disposition": 'attachment; filename="caltech-101.zip"'})
    server.add(
        "/files/7/download",
        BODY,
        headers={"Content-Disposition": "attachment; filename*=UTF-8''caf%C3%A9%20set.tar.gz"},
    )
    server.add("/plain/", BODY)
    server.add("/evil/", BODY, headers={"Content-Disposition": 'attachment; filename="../../etc/x.zip"'})
    expected = {
        "/get/": "caltech-101.zip",
        "/files/7/download": "café set.tar.gz",
        "/plain/": "archive",
        "/evil/": "x.zip",
    }
    for path, name in expected.items():
        dest = download.download(
            server.base + path + "?token=1", raw / path.strip("/").replace("/", "_"), None, partial, **FAST
        )
        assert dest.name == name and dest.read_bytes() == BODY


@pytest.mark.parametrize(
    ("given", "saved"),
    [
        ("filename*=UTF-8''photos%00.zip", "photos_.zip"),  # crashed the download: "embedded null byte"
        ("filename*=UTF-8''photos%0Aerror: forged.zip", "photos_error: forged.zip"),  # broke the log line in two
        ('filename="photos\tset\x7f.zip"', "photos_set_.zip"),
        ("filename*=UTF-8''%0A%00", "download"),  # nothing left of it: the URL's last segment
    ],
)
def test_control_characters_in_a_server_file_name_are_replaced(server, tmp_path, capsys, given, saved):
    """A file name is a line of the log and a path: no character below 0x20 (nor DEL) survives in it."""
    route = f"/control/{len(server.routes)}/download"
    server.add(route, BODY, headers={"Content-Disposition": f"attachment; {given}"})
    dest = download.download(server.base + route, tmp_path / "raw", None, tmp_path / "partial", **FAST)
    assert dest.name == saved and dest.read_bytes() == BODY
    printed = capsys.readouterr().err
    assert not any(line.startswith("error: forged") for line in printed.splitlines())
    assert downloads.archive_name(server.base + "/a%0Ab%00.zip") == "a_b_.zip"  # the URL's own name, likewise


def test_tilde_in_a_local_path_expands(tmp_path, paths, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "archive.zip").write_bytes(BODY)
    fetch("~/datasets/archive.zip", paths)
    assert md5_of(paths["dest"]) == MD5
    assert downloads.archive_name("~/datasets/archive.zip") == "archive.zip"


def test_host_name_that_does_not_resolve_fails_fast_pointing_offline(paths, monkeypatch):
    # .invalid never resolves (RFC 6761); without a network the look-up fails the same way.
    url = "https://data.caltech.invalid/records/x/files/caltech-101.zip?download=1"
    waits = []
    monkeypatch.setattr(downloads, "sleep", waits.append, raising=False)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, retries=5, backoff=2)  # retried, this would wait a minute in all
    assert waits == []  # failed at the first attempt, not after the retries
    message = str(caught.value)
    assert "cannot resolve the host name 'data.caltech.invalid'" in message
    assert "local path or a file:// URL" in message and "data.url" in message
    assert_nothing_at_final_path(paths)


def test_name_resolution_failure_seen_through_requests_is_not_retried(server, paths, monkeypatch):
    import socket as socket_module

    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args[0])
        raise socket_module.gaierror(socket_module.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket_module, "getaddrinfo", no_dns)
    with pytest.raises(StageError, match="cannot resolve the host name 'example.org'.*file:// URL"):
        fetch("http://example.org/archive.zip", paths, retries=5, backoff=2)
    assert calls == ["example.org"]  # one look-up, no retries


# --- servers as they really are (issue 19) --------------------------------------------------------


def tar_gz(seed: int = 0, size: int = 300_000) -> bytes:
    """A real .tar.gz of one incompressible file: the extract stage would read it."""
    import gzip
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        body = random.Random(seed).randbytes(size)
        info = tarfile.TarInfo("class_0/image.jpg")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return gzip.compress(data.getvalue(), mtime=0)


def test_file_changed_between_cut_and_resume_starts_over(server, paths, capsys):
    old, new = tar_gz(1), tar_gz(2)
    url = server.add("/changing/data.tar.gz", old, cut_after=len(old) // 2)
    with pytest.raises(StageError, match="is kept"):
        fetch(url, paths, md5=None, retries=0)
    first_etag = server.routes["/changing/data.tar.gz"].etag
    server.replace("/changing/data.tar.gz", new)  # new ETag, new Last-Modified
    fetch(url, paths, md5=None)
    second = server.routes["/changing/data.tar.gz"].requests[1]
    assert second["range"].startswith("bytes=") and second["if_range"] == first_etag
    assert paths["dest"].read_bytes() == new  # not the first half of the old file and the rest of the new
    assert "changed on the server" in capsys.readouterr().err


def test_resume_without_validators_checks_the_length_of_the_206(server, paths, capsys):
    old = tar_gz(3)
    url = server.add("/novalid/data.tar.gz", old, cut_after=len(old) // 2, validators=False)
    with pytest.raises(StageError, match="is kept"):
        fetch(url, paths, md5=None, retries=0)
    new = tar_gz(4, size=200_000)  # another file, another length, and no ETag or date to tell
    server.replace("/novalid/data.tar.gz", new)
    fetch(url, paths, md5=None, retries=2)
    assert paths["dest"].read_bytes() == new
    assert "changed on the server" in capsys.readouterr().err


@pytest.mark.parametrize("md5", ["right", None])
@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut"])
def test_tar_gz_served_with_content_encoding_gzip_is_saved_as_stored(server, paths, md5, cut):
    body = tar_gz(5)
    headers = {"Content-Type": "application/x-tar", "Content-Encoding": "gzip"}
    route = f"/s3/{md5}-{cut}/data.tar.gz"
    url = server.add(route, body, headers=headers, cut_after=len(body) // 3 if cut else None)
    fetch(url, paths, md5=hashlib.md5(body).hexdigest() if md5 else None, retries=2)
    assert paths["dest"].read_bytes() == body  # the .tar.gz as stored, not the tar inside
    requests = server.routes[route].requests
    assert all(r["headers"].get("Accept-Encoding") == "identity" for r in requests)
    if cut:
        assert 0 < int(requests[1]["range"].removeprefix("bytes=").rstrip("-")) <= len(body) // 3


def test_body_cut_short_with_no_length_never_reaches_raw(server, paths):
    body = tar_gz(6)
    # An HTTP/1.0 server that does not resume either: every try ends at the same place.
    url = server.add("/http10/data.tar.gz", body, no_length=True, cut_after=len(body) // 2, cuts=5, ignore_range=True)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, md5=None, retries=1)
    assert "end is missing" in str(caught.value)
    assert_nothing_at_final_path(paths)
    server.routes["/http10/data.tar.gz"].cuts = 0  # the network is fine again: the next run resumes
    fetch(url, paths, md5=None)
    assert paths["dest"].read_bytes() == body


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_no_length_archive_cut_at_any_point_is_caught(server, paths, kind, tmp_path):
    import io
    import tarfile
    import zipfile

    data = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(data, "w") as zf:
            zf.writestr("a/b.jpg", random.Random(7).randbytes(100_000))
    else:
        with tarfile.open(fileobj=data, mode="w") as tar:
            info = tarfile.TarInfo("a/b.jpg")
            info.size = 100_000
            tar.addfile(info, io.BytesIO(random.Random(7).randbytes(100_000)))
    body = data.getvalue()
    for cut in (len(body) - 600, len(body) // 2) if kind == "zip" else (len(body) // 2, 600):
        url = server.add(f"/http10-{kind}-{cut}/data.{kind}", body, no_length=True, cut_after=cut, ignore_range=True)
        with pytest.raises(StageError, match="end is missing"):
            fetch(url, paths, md5=None, retries=0)
        assert_nothing_at_final_path(paths)


def test_retry_after_seconds_is_honoured_up_to_the_cap(server, paths, monkeypatch, capsys):
    waits = []
    monkeypatch.setattr(downloads, "sleep", waits.append, raising=False)
    url = server.add("/busy/archive.zip", BODY, status=503, errors=2, error_headers={"Retry-After": "120"})
    fetch(url, paths, retries=3, backoff=2)
    assert waits == [120, 120]
    assert "HTTP 503 Service Unavailable; the server asks to wait 120 s; retrying in 120 s" in capsys.readouterr().err
    server.add("/busier/archive.zip", BODY, status=503, errors=1, error_headers={"Retry-After": "4000"})
    fetch(server.base + "/busier/archive.zip", paths, retries=3, backoff=2, max_wait=300)
    assert waits[2:] == [300]
    assert "asks to wait 4000 s; retrying in 300 s (the --max-retry-wait cap)" in capsys.readouterr().err


def test_retry_after_http_date(server, paths, monkeypatch):
    from email.utils import formatdate

    waits = []
    monkeypatch.setattr(downloads, "sleep", waits.append, raising=False)
    later = formatdate(time.time() + 100, usegmt=True)
    url = server.add("/busy-date/archive.zip", BODY, status=503, errors=1, error_headers={"Retry-After": later})
    fetch(url, paths, retries=3, backoff=2)
    assert len(waits) == 1 and 90 <= waits[0] <= 100


def test_the_time_limit_ends_the_retries_and_is_shown(server, paths, monkeypatch):
    waits = []
    monkeypatch.setattr(downloads, "sleep", waits.append, raising=False)
    url = server.add("/down/archive.zip", BODY, status=503, error_headers={"Retry-After": "120"})
    with pytest.raises(StageError) as caught:
        fetch(url, paths, retries=10, backoff=2, time_limit=200)
    message = str(caught.value)
    assert waits == [120]  # a second wait of 120 s would end past the 200 s limit
    assert "HTTP 503" in message and "time limit of 200 s" in message and "--time-limit" in message
    assert_nothing_at_final_path(paths)


def test_stall_mid_body_keeps_what_arrived_and_resumes(server, paths):
    url = server.add("/stall-mid/archive.zip", BODY, stall_after=100_000)
    fetch(url, paths, timeout=0.3, retries=1)
    first, second = ranges(server, "/stall-mid/archive.zip")
    assert first is None and second == "bytes=100000-"  # every byte received before the stall was kept
    assert md5_of(paths["dest"]) == MD5


SECRET_URL_PATH = "/private/archive.zip"


def secret_url(server, path: str = SECRET_URL_PATH) -> str:
    return server.base.replace("http://", "http://alice:s3cr3t-pw@") + path + "?token=t0p-s3cr3t&x=1"


def assert_no_secret(text: str) -> None:
    assert "s3cr3t" not in text and "t0p" not in text, text


def test_secrets_in_data_url_never_shown(server, paths, capsys):
    server.add(SECRET_URL_PATH, BODY, cut_after=100_000)
    fetch(secret_url(server), paths, md5=None)  # a retry line and the null-md5 warning
    out = capsys.readouterr()
    assert "retrying" in out.err and "data.md5 is null" in out.err
    assert_no_secret(out.out + out.err)
    assert "127.0.0.1" in out.err  # the host is still named
    for fault in (dict(status=500), dict(status=404)):
        server.add("/private/fault.zip", BODY, **fault)
        with pytest.raises(StageError) as caught:
            fetch(secret_url(server, "/private/fault.zip"), paths, md5=None)
        assert "127.0.0.1" in str(caught.value)
        assert_no_secret(str(caught.value) + capsys.readouterr().err)
    with pytest.raises(StageError) as caught:
        fetch(secret_url(server), paths, md5="0" * 32)
    assert_no_secret(str(caught.value))


def test_redact():
    from transfer.core.redact import redact, redact_text

    assert redact("https://u:p@host:8080/a/b.zip?sig=1#frag") == "https://***@host:8080/a/b.zip?***"
    assert redact("https://host/a.zip") == "https://host/a.zip"
    assert redact("/data/own.zip") == "/data/own.zip"
    assert redact_text("GET https://u:p@h/x?k=v failed") == "GET https://***@h/x?*** failed"
    # Issue 35: path parameters; the path and query urllib3 quotes without the host; Authorization values.
    assert redact("https://h/files/a.zip;token=t0p/b") == "https://h/files/a.zip;***/b"
    pool = "HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: /a.zip?X-Amz-Signature=t0p"
    assert redact_text(f"{pool} (Caused by SSLError(...))") == (
        "HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: /a.zip?*** (Caused by SSLError(...))"
    )
    assert redact_text("Invalid header value b'Bearer t0p-s3cr3t\\r\\n'") == "Invalid header value b'Bearer ***'"
    assert redact_text("see metrics/data.json; then what? rerun") == "see metrics/data.json; then what? rerun"


def test_credentials_given_are_hidden_wherever_they_appear():
    from transfer.core.redact import mask_secrets, redact, redact_text, remember, remember_url

    remember("t0p/s3cr3t")
    remember_url("https://s3.example.org/b/a.zip?X-Amz-Signature=s1gn4ture&file=photos.zip")
    assert mask_secrets("sent t0p/s3cr3t, t0p%2Fs3cr3t") == "sent ***, ***"  # as given and percent-encoded
    assert redact_text("(Caused by X('s1gn4ture'))") == "(Caused by X('***'))"
    assert redact("https://h/photos.zip") == "https://h/photos.zip"  # a value that is no credential stays shown


@pytest.mark.e2e
def test_cli_refuses_secrets_in_data_url_without_showing_them(server, tmp_path):
    # dvc.lock records params.yaml, so credentials there would reach git: the stage refuses them, before any work.
    server.add("/private/cli.zip", BODY)
    url = secret_url(server, "/private/cli.zip")
    result = run_stage("download", "data/raw", "--retries", "0", cwd=tmp_path, params=stage_params(url, None))
    assert result.returncode == 1 and "data.url carries user info" in result.stderr and "~/.netrc" in result.stderr
    assert "http://***@127.0.0.1" in result.stderr and not server.routes["/private/cli.zip"].requests
    assert_no_secret(result.stdout + result.stderr)


def test_bearer_token_and_header_from_the_environment(server, paths, monkeypatch):
    url = server.add("/token/archive.zip", BODY, require={"Authorization": "Bearer abc123"})
    with pytest.raises(StageError) as caught:
        fetch(url, paths)
    assert "HTTP 401" in str(caught.value) and "DATA_TOKEN" in str(caught.value) and ".netrc" in str(caught.value)
    monkeypatch.setenv("DATA_TOKEN", "abc123")
    fetch(url, paths)
    assert md5_of(paths["dest"]) == MD5
    paths["dest"].unlink()
    monkeypatch.delenv("DATA_TOKEN")
    url = server.add("/header/archive.zip", BODY, require={"Private-Token": "xyz"})
    monkeypatch.setenv("DATA_HEADER", "Private-Token: xyz")
    fetch(url, paths)
    assert md5_of(paths["dest"]) == MD5


def test_header_from_the_environment_is_not_sent_to_another_host(server, paths, monkeypatch):
    """A redirect to another host (a signed storage URL) must not receive the token."""
    server.add("/elsewhere/archive.zip", BODY)
    localhost = server.base.replace("127.0.0.1", "localhost")
    url = server.add("/hop/archive.zip", b"", redirect=localhost + "/elsewhere/archive.zip")
    monkeypatch.setenv("DATA_TOKEN", "abc123")
    monkeypatch.setenv("DATA_HEADER", "Private-Token: xyz")
    fetch(url, paths)
    (hop,) = server.routes["/hop/archive.zip"].requests
    (target,) = server.routes["/elsewhere/archive.zip"].requests
    assert hop["headers"]["Authorization"] == "Bearer abc123" and hop["headers"]["Private-Token"] == "xyz"
    assert "Authorization" not in target["headers"] and "Private-Token" not in target["headers"]


def test_netrc_credentials(server, paths, monkeypatch, tmp_path):
    import base64

    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1\n  login alice\n  password s3cr3t-pw\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    basic = "Basic " + base64.b64encode(b"alice:s3cr3t-pw").decode()
    url = server.add("/netrc/archive.zip", BODY, require={"Authorization": basic})
    fetch(url, paths)
    assert md5_of(paths["dest"]) == MD5


def refused_files() -> dict[str, tuple[bytes, str]]:
    import gzip

    return {
        "data.7z": (b"7z\xbc\xaf\x27\x1c\x00\x04" + random.Random(8).randbytes(2000), "7-Zip"),
        "data.rar": (b"Rar!\x1a\x07\x01\x00" + random.Random(9).randbytes(2000), "RAR"),
        "photos.jpg.gz": (gzip.compress(random.Random(10).randbytes(5000)), "a single compressed file"),
        "page.zip": (b"<!DOCTYPE html><html><body>Sign in</body></html>" * 20, "HTML page"),
    }


@pytest.mark.parametrize("name", list(refused_files()))
def test_refused_formats_are_named_for_a_local_path_and_a_url(server, paths, tmp_path, name):
    body, what = refused_files()[name]
    source = tmp_path / name
    source.write_bytes(body)
    with pytest.raises(StageError) as caught:
        fetch(str(source), paths, md5=None)
    local = str(caught.value)
    assert what in local and str(source) in local and "not a zip or tar archive" in local
    assert " sent " not in local and "downloads again" not in local  # it is a file here, not a server's answer
    url = server.add(f"/refused/{name}", body)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, md5=None)
    remote = str(caught.value)
    assert what in remote and url in remote and "downloads again" in remote
    assert_nothing_at_final_path(paths)
    assert partial_files(paths) == []


# --- a full disk, for real: a file-size limit (EFBIG) in the stage's process ----------------------


def limited(limit: int):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.e2e
def test_file_size_limit_while_downloading_is_one_clear_error(server, tmp_path):
    url = server.add("/big/archive.zip", BODY)
    write_params(tmp_path, stage_params(url, MD5))
    command, env = stage_command("download", "data/raw", "--retries", "0")
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, preexec_fn=limited(100_000)
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "File too large" not in result.stderr.split("error:")[0]
    message = result.stderr.split("error: ")[-1]
    assert "file-size limit" in message and "data/.partial" in message and f"{len(BODY):,}" in message
    assert list((tmp_path / "data" / "raw").iterdir()) == []
