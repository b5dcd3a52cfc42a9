"""A local archive (data.url a path or file:// URL) is a dependency: replaced with other bytes, `dvc status` names
it and `dvc repro` rebuilds what follows; the same bytes written again rerun nothing. An http(s) URL keeps
`dvc status` offline and `dvc repro` from downloading again. Real `dvc` on the first three stages only (source,
download, extract: no TensorFlow), on generated archives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from testing.synthetic import make_archive
from tests.http_server import FileServer
from tools import verify
from tools.scratch_repo import copy_pipeline, dvc, make_repo, small_params, stages_run

pytestmark = pytest.mark.e2e
FIRST_STAGES = ["source", "download", "extract"]


def first_stages_repo(root: Path, url: str) -> Path:
    pipeline = copy_pipeline(root / "pipeline")
    spec = yaml.safe_load((pipeline / "dvc.yaml").read_text())
    spec = {"stages": {name: spec["stages"][name] for name in FIRST_STAGES}}
    (pipeline / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.rmtree(pipeline / "release")  # the export pipeline needs what these stages do not make
    return make_repo(root / "repo", small_params(url, None), source=pipeline)


def status(repo: Path) -> dict:
    text = dvc(repo, "status", "--json").stdout.strip()
    return json.loads(text[text.index("{") :])


def log(result) -> str:
    return result.stdout + result.stderr


@pytest.mark.parametrize("scheme", ["path", "file://"])
def test_a_local_archive_replaced_in_place_is_picked_up(tmp_path, scheme):
    archive = tmp_path / "flowers.tar.gz"
    make_archive(archive, layout="legacy", n_classes=3, per_class=4, size=16)
    repo = first_stages_repo(tmp_path, archive.as_uri() if scheme == "file://" else str(archive))
    assert stages_run(log(dvc(repo, "repro"))) == FIRST_STAGES
    assert status(repo) == {}

    shutil.copyfile(archive, tmp_path / "copy")  # the same bytes, a new file and mtime
    (tmp_path / "copy").replace(archive)
    assert status(repo) == {}
    assert stages_run(log(dvc(repo, "repro"))) == []

    images = len(list((repo / "data/images").rglob("*.*")))
    make_archive(archive, layout="legacy", n_classes=4, per_class=4, size=16)  # rebuilt at the same path
    changed = status(repo)
    assert changed["source"] == [{"changed outs": {"data/source": "modified"}}]
    assert changed["download"] == [{"changed deps": {"data/source": "modified"}}]
    assert verify.main(["--repo", str(repo)]) == 1  # the CI gate sees it too
    assert stages_run(log(dvc(repo, "repro"))) == FIRST_STAGES
    assert len(list((repo / "data/images").rglob("*.*"))) > images
    assert status(repo) == {}


def test_an_http_archive_needs_no_network_for_status_or_a_second_repro(tmp_path):
    archive = tmp_path / "flowers.tar.gz"
    make_archive(archive, layout="legacy", n_classes=3, per_class=4, size=16)
    with FileServer() as server:
        url = server.add("/files/flowers.tar.gz", archive.read_bytes())
        repo = first_stages_repo(tmp_path, url)
        assert stages_run(log(dvc(repo, "repro"))) == FIRST_STAGES
    # The server is gone: status and repro must not need it.
    assert (repo / "data/source").read_text() == url + "\n" and not (repo / "data/source").is_symlink()
    assert status(repo) == {}
    result = dvc(repo, "repro")
    assert stages_run(log(result)) == [] and "Data and pipelines are up to date." in log(result)
