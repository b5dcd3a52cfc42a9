"""stages/download.py against a local HTTP server with faults: resume, retries, errors, checksums, Ctrl-C."""

from __future__ import annotations

import hashlib
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages import download
from stages.common import StageError
from tests.conftest import ROOT, md5_of, subprocess_env

BODY = random.Random(0).randbytes(300_000)
MD5 = hashlib.md5(BODY).hexdigest()
FAST = dict(timeout=1, retries=1, backoff=0)


@pytest.fixture
def paths(tmp_path):
    return {"dest": tmp_path / "raw" / "archive.zip", "partial": tmp_path / ".partial"}


def fetch(url: str, paths: dict, md5: str | None = MD5, **options):
    return download.fetch(url, paths["dest"], md5, paths["partial"], **{**FAST, **options})


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
    assert download.archive_name(url) == "caltech-101.zip"
    assert download.archive_name("file:///data/my%20set.tar.gz") == "my set.tar.gz"
    assert download.archive_name("/data/own.tar") == "own.tar"
    with pytest.raises(StageError, match="does not end in a file name"):
        download.archive_name("https://example.com/")


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
    url = server.add("/cuts/archive.zip", BODY, cut_after=100_000, cuts=4)
    fetch(url, paths, retries=4)
    seen = ranges(server, "/cuts/archive.zip")
    starts = [int(r.removeprefix("bytes=").rstrip("-")) for r in seen[1:]]
    assert len(seen) == 5 and seen[0] is None
    assert starts == sorted(starts) and len(set(starts)) == 4  # every retry resumed further on
    assert md5_of(paths["dest"]) == MD5


def test_server_ignoring_range_starts_over(server, paths, capsys):
    url = server.add("/norange/archive.zip", BODY, cut_after=100_000, ignore_range=True)
    fetch(url, paths)
    first, second = ranges(server, "/norange/archive.zip")
    assert first is None and second.startswith("bytes=")  # asked to resume, got the whole file
    assert md5_of(paths["dest"]) == MD5  # not the old prefix plus the whole file
    assert "does not support resuming; starting over" in capsys.readouterr().err


def test_stale_partial_longer_than_file_starts_over(server, paths):
    longer = random.Random(1).randbytes(200_000)
    url = server.add("/stale/archive.zip", longer, cut_after=150_000)
    with pytest.raises(StageError, match="partial file .* is kept"):
        fetch(url, paths, md5=hashlib.md5(longer).hexdigest(), retries=0)
    # The file on the server is replaced by a shorter one: resuming past its end gets HTTP 416.
    shorter = BODY[:50_000]
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


def stage_dir(tmp_path: Path, url: str, md5: str | None) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(url=url, md5=md5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def stage_command(*args: str) -> tuple[list[str], dict]:
    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT)
    return [sys.executable, "-m", "stages.download", "data/raw", *args], env


def run_stage(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command, env = stage_command(*args)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cli_failure_exits_non_zero_with_message_and_no_file(server, tmp_path):
    url = server.add("/cli/archive.zip", BODY, status=500)
    cwd = stage_dir(tmp_path, url, MD5)
    (cwd / "data" / "raw").mkdir(parents=True)
    (cwd / "data" / "raw" / "older.zip").write_bytes(b"from another data.url")
    result = run_stage(cwd, "--retries", "1", "--timeout", "1")
    assert result.returncode == 1
    assert f"error: could not download {url} after 2 attempts: HTTP 500" in result.stderr
    assert "Traceback" not in result.stderr
    assert list((cwd / "data" / "raw").iterdir()) == []


def test_cli_success(server, tmp_path):
    url = server.add("/cli-ok/caltech-101.zip", BODY)
    cwd = stage_dir(tmp_path, url + "?download=1", MD5)
    result = run_stage(cwd, "--retries", "0")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (cwd / "data" / "raw").iterdir()] == ["caltech-101.zip"]
    assert md5_of(cwd / "data" / "raw" / "caltech-101.zip") == MD5


def test_ctrl_c_keeps_partial_and_next_run_resumes(server, tmp_path):
    body = random.Random(2).randbytes(2_000_000)
    url = server.add("/slow/archive.zip", body, bytes_per_second=250_000)
    route = server.routes["/slow/archive.zip"]
    cwd = stage_dir(tmp_path, url, hashlib.md5(body).hexdigest())
    partial_dir = cwd / "data" / ".partial"
    command, env = stage_command("--timeout", "5", "--retries", "0")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 0 for p in partial_dir.glob("*.part")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no bytes arrived"
            time.sleep(0.05)
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
    result = run_stage(cwd, "--timeout", "5", "--retries", "0")
    assert result.returncode == 0, result.stderr
    assert ranges(server, "/slow/archive.zip") == [None, f"bytes={kept}-"]
    assert md5_of(cwd / "data" / "raw" / "archive.zip") == hashlib.md5(body).hexdigest()
    assert list(partial_dir.iterdir()) == []
