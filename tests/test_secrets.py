"""The secrets sweep: distinct secrets planted in every credential channel never show up anywhere.

The channels: data.url's user info and query string, DATA_TOKEN, DATA_HEADER and a netrc file ($NETRC). Every
pipeline in the repository (each dvc.yaml, found by looking, so a new stage or pipeline is covered as it lands) and
every `python -m tools.*` command the README names run with them planted; then no secret may appear in anything
they printed, in any file of the repository (outputs, dvc.lock, data/source, metrics, DVC's own files), nor in
any request that reached the plain-http server data.url redirects to (another origin: it must get no credentials).
params.yaml is the one file allowed to hold them: it is where the user typed data.url's, which every stage refuses.
"""

from __future__ import annotations

import base64
import re
import shlex
import sys
from pathlib import Path

import pytest

from synthetic.repos import ROOT, commit_all, pipeline_files, read_params, small_params, write_params
from tests.helpers import sh
from tests.http_server import FileServer

USER, PASSWORD, QUERY = "urluser-q1w2", "urlpass-e3r4", "query-t5y6"
TOKEN, HEADER, NETRC_LOGIN, NETRC_PASSWORD = "token-u7i8", "header-o9p0", "netrclogin-z1x2", "netrc-a1s2"
# A redirect's signed storage URL (S3's form) and a proxy's credentials.
SIGNATURE, PROXY_USER, PROXY_PASSWORD = "amzsig-h3j4k5", "proxyuser-m6n7", "proxypass-b8v9"
SIGNED_QUERY = f"X-Amz-Credential=AKIAEXAMPLE%2Fs3&X-Amz-Signature={SIGNATURE}"


def basic(login: str, password: str) -> str:
    return base64.b64encode(f"{login}:{password}".encode()).decode()


# Each secret as it could leak: as typed, and inside a Basic Authorization header (base64).
NEEDLES = {
    "data.url's user": USER,
    "data.url's password": PASSWORD,
    "data.url's query": QUERY,
    "DATA_TOKEN": TOKEN,
    "DATA_HEADER": HEADER,
    "netrc login": NETRC_LOGIN,
    "netrc password": NETRC_PASSWORD,
    "data.url's user info as Basic": basic(USER, PASSWORD),
    "netrc as Basic": basic(NETRC_LOGIN, NETRC_PASSWORD),
    "a redirect's signature": SIGNATURE,
    "a redirect's access key": "AKIAEXAMPLE",
}


def leaks(data: bytes) -> list[str]:
    return [name for name, needle in NEEDLES.items() if needle.encode() in data]


def readme_tools() -> list[list[str]]:
    """Every `python -m tools.NAME ARGS` command the README shows, as written there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"python -m (tools\.\w+)([^`#\n]*)", text)
    return sorted({(module, *shlex.split(args)) for module, args in commands})


def run_everything(repo: Path, tools: bool = True, rerun: bool = True) -> tuple[str, list[int]]:
    """Each pipeline, then (tools) each README tool command, in repo: what they all printed, and the pipelines' exit
    codes. rerun=False leaves out `tools.verify --rerun`, which reruns HEAD's pipelines in a clone."""
    log, codes = [], []
    for pipeline in pipeline_files(repo):
        result = sh(repo, sys.executable, "-m", "dvc", "repro", pipeline, check=False)
        log += [f"$ dvc repro {pipeline}", result.stdout, result.stderr]
        codes.append(result.returncode)
    for command in readme_tools() if tools else []:
        if "--rerun" in command and not rerun:
            continue
        result = sh(repo, sys.executable, "-m", *command, check=False)
        log += [f"$ python -m {' '.join(command)}", result.stdout, result.stderr]
    return "\n".join(log), codes


def plant(monkeypatch, netrc: Path, environment: bool) -> None:
    """The netrc file always; DATA_TOKEN and DATA_HEADER when `environment` (they take precedence over it)."""
    monkeypatch.setenv("NETRC", str(netrc))
    for name, value in (("DATA_TOKEN", TOKEN), ("DATA_HEADER", f"X-Data-Key: {HEADER}")):
        if environment:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)


def test_readme_tools_and_pipelines_are_found():
    """The sweep below covers what it finds: the README's tools and every pipeline file."""
    assert {command[0] for command in readme_tools()} >= {"tools.verify", "tools.report"}
    tracked = sh(ROOT, "git", "ls-files", "dvc.yaml", "*/dvc.yaml").stdout.split()
    assert pipeline_files(ROOT)[0] == "dvc.yaml" and sorted(pipeline_files(ROOT)) == sorted(tracked)


@pytest.mark.e2e
def test_no_planted_secret_shows_anywhere(reproduced, server, tmp_path, monkeypatch):
    archive = reproduced.archive  # the session's: the stages after the download find their outputs up to date
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login {NETRC_LOGIN}\n  password {NETRC_PASSWORD}\n")
    netrc.chmod(0o600)
    with FileServer() as storage:  # another origin (port), as a signed storage URL is: it must get no credentials
        target = storage.add(f"/storage/{archive.name}", archive.read_bytes())
        url = server.add(f"/private/{archive.name}", b"", redirect=target)
        repo = reproduced.copy(tmp_path / "repo")
        params = read_params(repo)
        params["data"]["url"] = url + "?download=1"
        write_params(repo, params)

        # Every pipeline with the token and header (source and download run: data.url changed), then every tool on
        # the committed run (tools.verify --rerun runs the pipeline again from scratch in a clone, with every stage),
        # then the download again with the netrc file alone.
        plant(monkeypatch, netrc, environment=True)
        log, codes = run_everything(repo, tools=False)
        assert codes == [0] * len(codes), log[-3000:]
        commit_all(repo, "reproduced")
        log += run_everything(repo)[0]
        plant(monkeypatch, netrc, environment=False)
        forced = sh(repo, sys.executable, "-m", "dvc", "repro", "-f", "download")
        log += forced.stdout + forced.stderr

        # data.url with user info and a query token: every stage refuses it, showing neither.
        plant(monkeypatch, netrc, environment=True)
        write_params(repo, small_params(url.replace("//", f"//{USER}:{PASSWORD}@") + f"?token={QUERY}", None))
        refused, codes = run_everything(repo, rerun=False)  # HEAD's params are the good ones: nothing to rerun
        assert "data.url carries user info" in refused and 0 not in codes, refused[-3000:]
        log += refused

        # A redirect to a signed URL on a server whose certificate is not trusted, under `dvc repro -v`.
        with FileServer(tls=True) as untrusted:
            untrusted.add("/storage/photos.zip", archive.read_bytes())
            signed = untrusted.base.replace("127.0.0.1", "localhost") + f"/storage/photos.zip?{SIGNED_QUERY}"
            write_params(repo, small_params(server.add("/private/signed.zip", b"", redirect=signed), None))
            failed = sh(repo, sys.executable, "-m", "dvc", "repro", "-v", "download", check=False)
        assert failed.returncode != 0 and "REQUESTS_CA_BUNDLE" in failed.stderr, failed.stderr[-3000:]
        log += failed.stdout + failed.stderr

        hops = server.routes[f"/private/{archive.name}"].requests
        assert any(TOKEN in str(hop["headers"]) for hop in hops)  # the channels were used...
        assert any(hop["headers"].get("Authorization") == "Basic " + NEEDLES["netrc as Basic"] for hop in hops)
        assert not any(USER in str(hop) or QUERY in str(hop) for hop in hops)  # ...the refused ones never
        reached = storage.routes[f"/storage/{archive.name}"].requests
    assert reached and not [leaks(str(request).encode()) for request in reached if leaks(str(request).encode())]
    assert not leaks(log.encode()), [line for line in log.splitlines() if leaks(line.encode())][:5]
    files = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.relative_to(repo).parts[:1]]
    leaked = {str(p.relative_to(repo)): leaks(p.read_bytes()) for p in files if p.name != "params.yaml"}
    assert not {path: names for path, names in leaked.items() if names}
    assert len(files) > 20  # outputs, dvc.lock, metrics, DVC's cache were there to search


# --- a redirect to a signed URL that fails, in each way a connection fails --------------------------------------

FAILURES = ["tls", "dns", "refused", "unreachable", "proxy refused", "proxy answers 502"]
RUN_SECRETS = (TOKEN, HEADER, SIGNATURE, "AKIAEXAMPLE", PROXY_USER, PROXY_PASSWORD)


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def failing_target(monkeypatch):
    """failing_target(kind): a signed storage URL whose fetch fails as `kind`, and the host a message should name."""
    import contextlib
    import errno

    import urllib3.util.connection

    from tests.fake_proxy import RecordingProxy

    stack = contextlib.ExitStack()
    real_connect = urllib3.util.connection.create_connection

    def no_route(address, *args, **kwargs):  # what the OS says with no route to the network
        if address[0] == "2001:db8::1":
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return real_connect(address, *args, **kwargs)

    def make(kind: str) -> tuple[str, str]:
        path = f"/storage/photos.zip?{SIGNED_QUERY}"
        if kind == "tls":
            tls = stack.enter_context(FileServer(tls=True))
            tls.add("/storage/photos.zip", b"PK")
            return tls.base.replace("127.0.0.1", "localhost") + path, "localhost"
        if kind == "dns":
            return "https://storage.example.invalid" + path, "storage.example.invalid"
        if kind == "refused":
            return f"http://localhost:{closed_port()}{path}", "localhost"
        if kind == "unreachable":
            monkeypatch.setattr(urllib3.util.connection, "create_connection", no_route)
            return "https://[2001:db8::1]" + path, "2001:db8::1"
        if kind == "proxy refused":
            port = closed_port()
        else:
            port = stack.enter_context(RecordingProxy(status=502)).httpd.server_address[1]
        monkeypatch.setenv("https_proxy", f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}")
        monkeypatch.setenv("no_proxy", "127.0.0.1")  # data.url's own server is reached directly
        return "https://storage.example.org" + path, "storage.example.org"

    with stack:
        yield make


@pytest.mark.parametrize("kind", FAILURES)
def test_a_redirect_to_a_signed_url_that_fails_shows_no_secret(
    server, failing_target, kind, tmp_path, monkeypatch, capsys
):
    """requests' error text quotes the URL it failed on (`with url: /path?X-Amz-Signature=...`): every line the
    download stage prints, retry lines and the final error, must hide it, and name the host that failed."""
    from stages import download
    from transfer.core import cli

    target, host = failing_target(kind)
    url = server.add(f"/signed/{kind.replace(' ', '-')}.zip", b"", redirect=target)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, small_params(url, None))
    monkeypatch.setenv("DATA_TOKEN", TOKEN)
    options = dict(timeout=2, retries=1, backoff=0)
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: download.main(tmp_path / "data/raw", tmp_path / "data/.partial", **options))
    printed = "\n".join(capsys.readouterr())
    assert exited.value.code == 1 and "Traceback" not in printed, printed
    assert not [secret for secret in RUN_SECRETS if secret in printed], printed
    last = printed.strip().splitlines()[-1]
    assert last.startswith("error: ") and host in last, printed
    assert ("proxy" in last) == kind.startswith("proxy"), printed
    if kind in ("tls", "dns"):  # retrying cannot help: said at once, not after a minute of retries
        assert "retrying" not in printed and len(printed.strip().splitlines()) == 1, printed
    if kind == "tls":
        assert "REQUESTS_CA_BUNDLE" in last and last.endswith("nothing was kept"), printed


def run_download(tmp_path, monkeypatch, url: str, **options) -> tuple[int, str]:
    """The download stage in this process, as its command runs it: (exit status, everything it printed)."""
    from stages import download
    from transfer.core import cli

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, small_params(url, None))
    options = dict(timeout=2, retries=1, backoff=0) | options
    try:
        cli.run(lambda: download.main(tmp_path / "data/raw", tmp_path / "data/.partial", **options))
    except SystemExit as exited:
        return int(exited.code or 0), ""
    return 0, ""


@pytest.mark.parametrize(
    ("variable", "value", "what"),
    [
        ("DATA_TOKEN", f"{TOKEN}\r\nX-Injected: 1", "a line break"),
        ("DATA_TOKEN", f"{TOKEN}\n", None),  # a trailing line end (`$(cat file)` keeps none; a file read may): stripped
        ("DATA_HEADER", f"X-Data-Key: {HEADER}\rX-Injected: 1", "a line break"),
        ("DATA_TOKEN", f"{TOKEN}\u2019", "the character U+2019"),
        ("DATA_HEADER", f"X-Data-Key: \u00e9{HEADER}\u2014x", "the character U+2014"),
        ("DATA_TOKEN", f"{TOKEN}\x1b[0m", "the control character 0x1b"),
    ],
)
def test_a_header_value_no_request_can_carry_is_refused_before_any_request(
    server, tmp_path, monkeypatch, capsys, variable, value, what
):
    """requests refused a line break with `ValueError: Invalid header value b'Bearer <the token>'` in a traceback,
    and http.client a character outside Latin-1 with a UnicodeEncodeError: named here, the value never shown."""
    route = f"/header-check/{len(server.routes)}.zip"
    url = server.add(route, zip_bytes())
    monkeypatch.setenv(variable, value)
    status, _ = run_download(tmp_path, monkeypatch, url)
    printed = "\n".join(capsys.readouterr())
    assert "Traceback" not in printed and TOKEN not in printed and HEADER not in printed, printed
    if what is None:
        assert status == 0, printed
        return
    assert status == 1 and not server.routes[route].requests, printed
    (line,) = printed.strip().splitlines()
    assert line.startswith(f"error: {variable} holds {what}"), printed


def zip_bytes() -> bytes:
    import io
    import zipfile

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("a/b.jpg", b"x" * 100)
    return data.getvalue()


# --- what a proxy sees --------------------------------------------------------------------------------------------


def test_a_proxy_is_sent_no_credential_in_clear_even_for_this_machine(server, tmp_path, monkeypatch, capsys):
    """Plain http to this machine may carry credentials because the bytes never leave it; through a proxy they
    do, and the proxy reads the request whole. With http_proxy set and no no_proxy, DATA_TOKEN is refused there."""
    from tests.fake_proxy import RecordingProxy

    url = server.add("/proxied/photos.zip", zip_bytes())
    with RecordingProxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.setenv("DATA_TOKEN", TOKEN)
        status, _ = run_download(tmp_path, monkeypatch, url)
        printed = "\n".join(capsys.readouterr())
        assert status == 1 and proxy.seen == [] and not server.routes["/proxied/photos.zip"].requests, printed
        assert "no_proxy" in printed and "proxy" in printed and TOKEN not in printed, printed

        monkeypatch.delenv("DATA_TOKEN")  # a public file: fetched through the proxy, which sees it all
        assert run_download(tmp_path, monkeypatch, url)[0] == 0
        assert [entry["line"] for entry in proxy.seen] == [f"GET {url} HTTP/1.1"]

        monkeypatch.setenv("DATA_TOKEN", TOKEN)  # no_proxy: straight to this machine, the token with it
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert run_download(tmp_path, monkeypatch, url)[0] == 0
        assert len(proxy.seen) == 1
    assert server.routes["/proxied/photos.zip"].requests[-1]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_an_https_proxy_sees_the_host_and_port_only(tmp_path, monkeypatch, capsys):
    """Through https_proxy the request travels inside TLS: the proxy sees `CONNECT host:port` and bytes it cannot
    read. REQUESTS_CA_BUNDLE makes a server whose certificate authority is not a public one trusted."""
    from tests.fake_proxy import RecordingProxy

    with FileServer(tls=True) as tls, RecordingProxy() as proxy:
        url = tls.add("/private/photos.zip", zip_bytes(), require={"Authorization": f"Bearer {TOKEN}"})
        monkeypatch.setenv("https_proxy", proxy.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.certificate))
        monkeypatch.setenv("DATA_TOKEN", TOKEN)
        status, _ = run_download(tmp_path, monkeypatch, url)
        printed = "\n".join(capsys.readouterr())
        assert status == 0, printed
        (seen,) = proxy.seen
        host = url.split("/")[2]
        assert seen["line"].startswith(f"CONNECT {host} HTTP/") and TOKEN not in str(seen["headers"])
        assert seen["relayed"] and TOKEN.encode() not in seen["relayed"]  # the request, encrypted
        assert tls.routes["/private/photos.zip"].requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
