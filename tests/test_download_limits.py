"""The download's promises on credentials, time and space (issue 26): credentials go to data.url's origin only
and never over plain http; the time limit holds while bytes trickle in; SIGTERM keeps what arrived; a file larger
than the free space is refused before a byte is written; a server's over-long file name is shortened."""

from __future__ import annotations

import base64
import hashlib
import shutil
import signal
import subprocess
from urllib.parse import quote

import pytest

from stages import download
from synthetic.repos import md5_of, write_params
from tests.helpers import run_stage, stage_command, wait_for
from tests.http_server import FileServer
from tests.test_download import BODY, MD5, fetch, partial_files, ranges, stage_params, zip_body
from transfer.core.errors import StageError


@pytest.fixture
def paths(tmp_path):
    return {"dest": tmp_path / "raw" / "archive.zip", "partial": tmp_path / ".partial"}


TOKEN, HEADER, NETRC_PASSWORD, URL_PASSWORD = "tok-1a2b", "hdr-3c4d", "netrc-5e6f", "url-7a8b"


def plant_credentials(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DATA_TOKEN", TOKEN)
    monkeypatch.setenv("DATA_HEADER", f"Private-Token: {HEADER}")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login alice\n  password {NETRC_PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))


def credentials_in(request: dict) -> list[str]:
    """The credentials a request carried, decoded (a Basic header hides its password in base64)."""
    text = " ".join(f"{name}: {value}" for name, value in request["headers"].items())
    for value in request["headers"].values():
        if value.startswith("Basic "):
            text += " " + base64.b64decode(value[6:]).decode(errors="replace")
    return [secret for secret in (TOKEN, HEADER, NETRC_PASSWORD, URL_PASSWORD) if secret in text]


def test_a_redirect_to_another_port_of_the_same_host_gets_no_credentials(server, paths, monkeypatch, tmp_path):
    """requests drops Authorization there but kept DATA_HEADER's header and read ~/.netrc again for the new port."""
    with FileServer() as other:
        target = other.add("/elsewhere/archive.zip", BODY)
        for planted in ("environment", "netrc"):
            if planted == "environment":
                plant_credentials(monkeypatch, tmp_path)
            else:
                monkeypatch.delenv("DATA_TOKEN")
                monkeypatch.delenv("DATA_HEADER")
            url = server.add(f"/hop-{planted}/archive.zip", b"", redirect=target)
            fetch(url, paths)
            assert md5_of(paths["dest"]) == MD5
            paths["dest"].unlink()
            (hop,) = server.routes[f"/hop-{planted}/archive.zip"].requests
            assert credentials_in(hop)  # the origin itself gets them
        assert [credentials_in(request) for request in other.routes["/elsewhere/archive.zip"].requests] == [[], []]


def test_credentials_go_to_the_origin_only_and_never_over_plain_http():
    from transfer.fetch import credentials

    given = "https://data.example.org/f.zip"
    assert credentials.may_receive(given, "https://data.example.org:443/other/f.zip?sig=1")
    assert not credentials.may_receive(given, "http://data.example.org/f.zip")  # a downgrading redirect
    assert not credentials.may_receive(given, "https://data.example.org:8443/f.zip")
    assert not credentials.may_receive(given, "https://storage.example.org/f.zip")
    assert not credentials.may_receive("http://data.example.org/f.zip", "http://data.example.org/f.zip")
    assert credentials.may_receive("http://127.0.0.1:8000/f.zip", "http://127.0.0.1:8000/g.zip")  # never leaves


@pytest.mark.parametrize("given", ["DATA_TOKEN", "DATA_HEADER", "password"])
def test_plain_http_with_credentials_is_refused_before_sending(paths, monkeypatch, given):
    url = "http://data.example.invalid/archive.zip"
    if given == "password":
        url = f"http://alice:{URL_PASSWORD}@data.example.invalid/archive.zip"
    else:
        monkeypatch.setenv(given, f"X-Key: {HEADER}" if given == "DATA_HEADER" else TOKEN)
    with pytest.raises(StageError) as caught:
        fetch(url, paths)
    message = str(caught.value)
    assert "plain http" in message and "never sent unencrypted" in message and "https://" in message
    assert not any(secret in message for secret in (TOKEN, HEADER, URL_PASSWORD))


def test_the_time_limit_holds_while_bytes_trickle_in(server, paths):
    """Each byte resets the read timeout: the limit must be a deadline over the whole transfer."""
    body = zip_body(5, 200_000)
    url = server.add("/trickle/archive.zip", body, bytes_per_second=20_000)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, md5=hashlib.md5(body).hexdigest(), timeout=5, time_limit=1)
    message = str(caught.value)
    assert "time limit of 1 s (--time-limit) passed while the transfer was under way" in message
    assert "kept" in message and not paths["dest"].exists()
    (partial,) = [p for p in partial_files(paths) if p.suffix == ".part"]
    assert 0 < partial.stat().st_size < len(body)


@pytest.mark.parametrize("redirect", [False, True], ids=["answer", "redirect"])
def test_the_time_limit_holds_while_the_status_line_and_headers_trickle_in(server, paths, redirect):
    """A server that sends its answer's head a byte at a time never trips the read timeout, and the deadline was
    checked only once the body began: it must cover the whole exchange (connect, headers, body)."""
    import time

    route = f"/slow-head/{len(server.routes)}/archive.zip"
    url = server.add(route, BODY, head_bytes_per_second=20)  # about 10 s for the head alone
    if redirect:  # the 302's head trickles, before any file is involved
        server.routes[route].redirect = server.add(f"{route}.target", BODY)
    started = time.monotonic()
    with pytest.raises(StageError) as caught:
        fetch(url, paths, timeout=5, time_limit=1.5)
    assert time.monotonic() - started < 4, "the time limit did not stop the exchange"
    message = str(caught.value)
    assert "time limit of 1.5 s (--time-limit) passed" in message and "Traceback" not in message
    assert not paths["dest"].exists()


def test_a_file_larger_than_the_free_space_is_refused_before_writing(server, paths, monkeypatch):
    url = server.add("/huge/archive.zip", BODY)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=len(BODY) // 2))
    with pytest.raises(StageError) as caught:
        fetch(url, paths)
    message = str(caught.value)
    assert "no space left" in message and f"{len(BODY):,} bytes are needed" in message
    assert all(p.stat().st_size == 0 for p in partial_files(paths) if p.suffix == ".part")


def test_a_length_larger_than_the_whole_disk_is_named_as_the_servers_error(server, paths):
    """A Content-Length of 1 PB was reported as "no space left" on a disk with 71 GB free."""
    url = server.add("/petabyte/archive.zip", BODY, announce=10**15)
    with pytest.raises(StageError) as caught:
        fetch(url, paths)
    message = str(caught.value)
    assert "announces 1,000,000,000,000,000 bytes" in message and "more than the whole disk" in message, message
    assert "no space left" not in message and "check data.url" in message
    assert all(p.stat().st_size == 0 for p in partial_files(paths) if p.suffix == ".part")


@pytest.mark.parametrize("limit", ["max_size", "free space"])
def test_an_endless_body_with_no_length_stops_at_a_cap_and_is_not_kept(server, paths, monkeypatch, limit):
    """Such a body filled the disk, and the message then said the next run would resume it."""
    url = server.add(f"/endless-{limit.replace(' ', '-')}/archive.zip", BODY, no_length=True, endless=True)
    options = dict(max_size=2_000_000)
    if limit == "free space":
        real = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=3_000_000))
        options = {}
    with pytest.raises(StageError) as caught:
        fetch(url, paths, **options)
    message = str(caught.value)
    assert "with no length announced" in message and "nothing was kept" in message, message
    assert "resume" not in message
    assert ("--max-size" in message) == (limit == "max_size"), message
    assert [p for p in partial_files(paths) if p.suffix == ".part"] == []


def test_a_length_over_the_size_limit_is_refused_before_writing(server, paths):
    url = server.add("/over-limit/archive.zip", BODY)
    with pytest.raises(StageError) as caught:
        fetch(url, paths, max_size=len(BODY) - 1)
    assert f"announces {len(BODY):,} bytes" in str(caught.value) and "--max-size" in str(caught.value)
    assert all(p.stat().st_size == 0 for p in partial_files(paths) if p.suffix == ".part")


def test_a_zip_the_server_gzips_on_the_way_is_named_with_its_content_encoding(server, paths):
    import gzip

    url = server.add("/gzipped/archive.zip", gzip.compress(BODY), headers={"Content-Encoding": "gzip"})
    with pytest.raises(StageError) as caught:
        fetch(url, paths, md5=None)
    message = str(caught.value)
    assert "Content-Encoding: gzip" in message and "gunzip" in message, message


def test_a_server_name_longer_than_the_file_system_takes_is_shortened(server, tmp_path):
    name = "Ü" * 150 + ".tar.gz"  # 307 bytes in UTF-8
    server.add("/long/download", BODY, headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})
    dest = download.download(server.base + "/long/download", tmp_path / "raw", MD5, tmp_path / "partial", retries=0)
    assert dest.parent == tmp_path / "raw" and dest.name.endswith(".tar.gz") and dest.name.startswith("ÜÜ")
    assert len(dest.name.encode()) <= 255 and md5_of(dest) == MD5


@pytest.mark.e2e
def test_sigterm_keeps_what_arrived_and_the_next_run_resumes(server, tmp_path):
    body = zip_body(3, 2_000_000)
    url = server.add("/term/archive.zip", body, bytes_per_second=250_000)
    route = server.routes["/term/archive.zip"]
    write_params(tmp_path, stage_params(url, hashlib.md5(body).hexdigest()))
    partial_dir = tmp_path / "data" / ".partial"
    command, env = stage_command("download", "data/raw", "--timeout", "5", "--retries", "0")
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process = subprocess.Popen(command, cwd=tmp_path, env=env, **pipes)
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in partial_dir.glob("*.part")), "bytes arrive", 60, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert "terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    (partial,) = partial_dir.glob("*.part")
    kept = partial.stat().st_size
    assert 0 < kept < len(body)
    route.bytes_per_second = None
    result = run_stage("download", "data/raw", "--timeout", "5", "--retries", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ranges(server, "/term/archive.zip") == [None, f"bytes={kept}-"]
    assert md5_of(tmp_path / "data" / "raw" / "archive.zip") == hashlib.md5(body).hexdigest()


def test_a_local_archive_larger_than_the_free_space_is_refused_before_copying(paths, tmp_path, monkeypatch):
    source = tmp_path / "archive.zip"
    source.write_bytes(BODY)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=len(BODY) // 2))
    with pytest.raises(StageError) as caught:
        fetch(str(source), paths)
    assert "no space left" in str(caught.value) and f"{len(BODY):,} bytes are needed" in str(caught.value)
    assert partial_files(paths) == []


def test_a_401_over_plain_http_says_no_credential_is_sent_there(paths, monkeypatch, tmp_path):
    """A netrc password is not sent over plain http (to another machine): the 401 says why."""
    from transfer.fetch import credentials

    plant_credentials(monkeypatch, tmp_path)
    monkeypatch.delenv("DATA_TOKEN")
    monkeypatch.delenv("DATA_HEADER")
    monkeypatch.setattr(credentials, "LOOPBACK", set())  # the test server is this machine: treat it as remote
    with FileServer() as remote:
        url = remote.add("/plain/archive.zip", BODY, require={"Authorization": "Basic x"})
        with pytest.raises(StageError) as caught:
            fetch(url, paths)
        assert "HTTP 401" in str(caught.value) and "none is sent over plain http" in str(caught.value)
        assert "Authorization" not in remote.routes["/plain/archive.zip"].requests[0]["headers"]
