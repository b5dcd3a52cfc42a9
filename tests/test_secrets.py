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

from synthetic.datasets import make_archive
from synthetic.repos import ROOT, commit_all, md5_of, pipeline_files, small_params, write_params
from tests.helpers import make_repo, sh
from tests.http_server import FileServer

USER, PASSWORD, QUERY = "urluser-q1w2", "urlpass-e3r4", "query-t5y6"
TOKEN, HEADER, NETRC_LOGIN, NETRC_PASSWORD = "token-u7i8", "header-o9p0", "netrclogin-z1x2", "netrc-a1s2"


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
def test_no_planted_secret_shows_anywhere(server, tmp_path, monkeypatch):
    archive = tmp_path / "photos.zip"
    make_archive(archive, layout="user", n_classes=3, per_class=8, size=32, extras=False)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login {NETRC_LOGIN}\n  password {NETRC_PASSWORD}\n")
    netrc.chmod(0o600)
    with FileServer() as storage:  # another origin (port), as a signed storage URL is: it must get no credentials
        target = storage.add("/storage/photos.zip", archive.read_bytes())
        url = server.add("/private/photos.zip", b"", redirect=target)
        repo = make_repo(tmp_path / "repo", small_params(url + "?download=1", md5_of(archive)))

        # Every pipeline with the token and header, then every tool on the committed run (tools.verify --rerun
        # runs the pipelines again in a clone), then the download again with the netrc file alone.
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

        hops = server.routes["/private/photos.zip"].requests
        assert any(TOKEN in str(hop["headers"]) for hop in hops)  # the channels were used...
        assert any(hop["headers"].get("Authorization") == "Basic " + NEEDLES["netrc as Basic"] for hop in hops)
        assert not any(USER in str(hop) or QUERY in str(hop) for hop in hops)  # ...the refused ones never
        reached = storage.routes["/storage/photos.zip"].requests
    assert reached and not [leaks(str(request).encode()) for request in reached if leaks(str(request).encode())]
    assert not leaks(log.encode()), [line for line in log.splitlines() if leaks(line.encode())][:5]
    files = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.relative_to(repo).parts[:1]]
    leaked = {str(p.relative_to(repo)): leaks(p.read_bytes()) for p in files if p.name != "params.yaml"}
    assert not {path: names for path, names in leaked.items() if names}
    assert len(files) > 20  # outputs, dvc.lock, metrics, DVC's cache were there to search
