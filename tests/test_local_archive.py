"""A local archive (data.url a path or file:// URL) is a dependency: replaced with other bytes, `dvc status` names
it and `dvc repro` rebuilds what follows; the same bytes written again rerun nothing. An http(s) URL keeps
`dvc status` offline and `dvc repro` from downloading again. Real `dvc` on the first three stages only (source,
download, extract: no TensorFlow), on generated archives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from synthetic.datasets import make_archive
from synthetic.repos import (
    clone,
    commit_all,
    copy_pipeline,
    dvc,
    dvc_status,
    make_repo,
    small_params,
    stages_run,
    write_params,
)
from tests.http_server import FileServer
from tools import verify

pytestmark = pytest.mark.e2e
FIRST_STAGES = ["source", "download", "extract"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A git + DVC repository of the first three stages, made once: each test copies it and sets its data.url."""
    root = tmp_path_factory.mktemp("first_stages")
    pipeline = copy_pipeline(root / "pipeline")
    spec = yaml.safe_load((pipeline / "dvc.yaml").read_text())
    spec = {"stages": {name: spec["stages"][name] for name in FIRST_STAGES}}
    (pipeline / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return make_repo(root / "repo", small_params("unset.zip", None), source=pipeline)


@pytest.fixture
def first_stages_repo(template):
    """first_stages_repo(root, url): a copy of the template in root/repo, data.url set and committed."""

    def make(root: Path, url: str) -> Path:
        def skip_dvc_tmp(folder: str, names: list[str]) -> list[str]:  # DVC's state, keyed by inode: rebuilt
            return ["tmp"] if Path(folder) == template / ".dvc" else []

        repo = Path(shutil.copytree(template, root / "repo", symlinks=True, ignore=skip_dvc_tmp))
        write_params(repo, small_params(url, None))
        commit_all(repo, "data.url")
        return repo

    return make


status = dvc_status


def log(result) -> str:
    return result.stdout + result.stderr


def test_a_local_archive_replaced_in_place_is_picked_up(first_stages_repo, tmp_path):
    # A file:// URL gives data/source the same link (test_download): followed the same way.
    archive = tmp_path / "flowers.tar.gz"
    make_archive(archive, layout="legacy", n_classes=3, per_class=4, size=16)
    repo = first_stages_repo(tmp_path, str(archive))
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


def test_an_http_archive_needs_no_network_for_status_or_a_second_repro(first_stages_repo, tmp_path):
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


# ---------------------------------------------------------------------------- the archive as the user wrote it


def small_archive(path: Path, n_classes: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_archive(path, layout="legacy", n_classes=n_classes, per_class=4, size=16)
    return path


def changed_stages(repo: Path) -> list[str]:
    return sorted(status(repo))


def test_a_latest_link_re_pointed_to_another_archive_is_a_change(first_stages_repo, tmp_path):
    first, second = small_archive(tmp_path / "v1.tar.gz"), small_archive(tmp_path / "v2.tar.gz", n_classes=4)
    latest = tmp_path / "latest.tar.gz"
    latest.symlink_to(first)
    repo = first_stages_repo(tmp_path, str(latest))
    dvc(repo, "repro")
    commit_all(repo, "run")
    assert status(repo) == {} and verify.main(["--repo", str(repo)]) == 0

    latest.unlink()
    latest.symlink_to(second)  # the "latest" habit: the link now names the new archive
    assert changed_stages(repo) == ["download", "source"]
    assert verify.main(["--repo", str(repo)]) == 1
    assert stages_run(log(dvc(repo, "repro"))) == FIRST_STAGES


def test_a_relative_archive_in_the_repository_is_each_checkouts_own_file(first_stages_repo, tmp_path):
    repo = first_stages_repo(tmp_path, "archives/flowers.tar.gz")
    small_archive(repo / "archives/flowers.tar.gz")
    dvc(repo, "repro")
    commit_all(repo, "the archive, kept in git, and the run")
    assert status(repo) == {}

    other = clone(repo, tmp_path / "elsewhere")  # another checkout: its own copy of the archive
    dvc(other, "repro")
    small_archive(other / "archives/flowers.tar.gz", n_classes=4)  # changed in this checkout only
    assert changed_stages(other) == ["download", "source"]
    assert verify.main(["--repo", str(other)]) == 1
    assert status(repo) == {}  # the first checkout's archive did not change


@pytest.mark.parametrize("cache_type", ["symlink", "copy"])  # a link into the cache, and a file of its own
def test_an_archive_added_with_dvc_is_followed_under_every_cache_type(first_stages_repo, tmp_path, cache_type):
    repo = first_stages_repo(tmp_path, "archives/flowers.tar.gz")
    dvc(repo, "config", "cache.type", cache_type)
    small_archive(repo / "archives/flowers.tar.gz")
    dvc(repo, "add", "archives/flowers.tar.gz")
    assert (repo / "archives/flowers.tar.gz").is_symlink() == (cache_type == "symlink")  # symlink: into the cache
    dvc(repo, "repro")
    commit_all(repo, "archive v1 and the run")
    assert status(repo) == {} and verify.main(["--repo", str(repo)]) == 0

    (repo / "archives/flowers.tar.gz").unlink()
    small_archive(repo / "archives/flowers.tar.gz", n_classes=4)
    dvc(repo, "add", "archives/flowers.tar.gz")  # version 2: the link now names another cache file
    assert changed_stages(repo) == ["download", "source"]
    assert verify.main(["--repo", str(repo)]) == 1
    assert stages_run(log(dvc(repo, "repro"))) == FIRST_STAGES


def test_a_clone_on_a_machine_without_the_archive_pulls_and_answers(first_stages_repo, tmp_path, capsys):
    archive = small_archive(tmp_path / "archive-here/flowers.tar.gz")
    repo = first_stages_repo(tmp_path, str(archive))
    dvc(repo, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    dvc(repo, "repro")
    dvc(repo, "push")
    commit_all(repo, "run")

    other = clone(repo, tmp_path / "colleague")
    archive.rename(tmp_path / "moved.tar.gz")  # the colleague's machine does not have this path
    dvc(other, "pull")
    result = dvc(other, "status", check=False)
    assert result.returncode == 0 and "unexpected error" not in log(result), log(result)
    assert "extract" not in status(other)  # what was pulled is up to date
    capsys.readouterr()
    code = verify.main(["--repo", str(other)])
    out = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in out.out + out.err
    assert "not checked" in out.out + out.err and "data/source" in out.out + out.err
    failed = dvc(other, "repro", check=False)  # the archive is not here: one line naming it, nothing rerun
    assert failed.returncode != 0 and "is not a file" in log(failed) and "unexpected error" not in log(failed)
    assert stages_run(log(failed)) == ["source"]
