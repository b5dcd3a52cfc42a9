"""The suite's one reproduced repository: the README's first run, made once per test session and shared.

`dvc repro` of this checkout's pipeline in a fresh git + DVC repository, on the official zip's layout (5 classes
of 24 images at 48 px, generated) served over HTTP from 127.0.0.1, with the small CPU params (synthetic/repos.py:
random-init resnet50 at 32 px, finetune.epochs 0 as params.yaml has it); then `dvc remote add -d` a local remote,
commit and `dvc push`, as the README says.

pytest-xdist runs a worker per core: the first worker that asks builds it under a file lock in a folder the
controller shares with every worker (tests/conftest.py), the others wait for it and reuse it; the archive is served
by the controller, so its URL answers for the whole session. Tests read its files; anything that runs dvc or git, or
changes a file, works in `copy(dest)` (its files, git history and DVC cache, .dvc/tmp left for DVC to rebuild) or in
a `git clone` of it (`dvc pull` from its remote).
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

from synthetic.datasets import make_archive
from synthetic.repos import commit_all, dvc, make_repo, md5_of, small_params

ARCHIVE = "records/caltech-101.zip"


@dataclass
class Reproduced:
    path: Path  # read-only: copy() it before running anything
    log: str  # what the first `dvc repro` printed
    url: str  # data.url: the archive, served for the whole session
    archive: Path  # the archive's bytes on disk (the served file)
    remote: Path  # the DVC remote it pushed to

    def copy(self, dest: Path) -> Path:
        """A copy to change: its files, git history and DVC cache (hard links where files never change: DVC's
        cache, git's objects and the .keras models, which DVC and the stages replace, never rewrite in place; the
        classifier alone is about 100 MB, copied some twenty times a session otherwise)."""
        source = self.path

        def link_or_copy(src: str, dst: str) -> None:
            parts = Path(src).relative_to(source).parts
            model = parts[0] == "models" and src.endswith(".keras")
            if model or parts[:2] in ((".dvc", "cache"), (".git", "objects")):
                os.link(src, dst)
            else:
                shutil.copy2(src, dst)

        def skip_dvc_tmp(folder: str, names: list[str]) -> list[str]:
            return ["tmp"] if Path(folder) == source / ".dvc" else []

        shutil.copytree(source, dest, symlinks=True, ignore=skip_dvc_tmp, copy_function=link_or_copy)
        return Path(dest)


def build(root: Path, served: Path, base_url: str) -> None:
    """Make the repository in root/repo (called once per session, under the lock)."""
    archive = served / ARCHIVE
    archive.parent.mkdir(parents=True, exist_ok=True)
    make_archive(archive, layout="official", n_classes=5, per_class=24, size=48, seed=1)
    url = f"{base_url}/{ARCHIVE}?download=1"  # as CaltechDATA's link reads
    repo = make_repo(root / "repo", small_params(url, md5_of(archive)))
    first = dvc(repo, "repro")
    dvc(repo, "remote", "add", "-d", "storage", str(root / "remote"))
    commit_all(repo, "the first run")
    dvc(repo, "push")
    info = {
        "log": f"{first.stdout}\n{first.stderr}",
        "url": url,
        "archive": str(archive),
        "remote": str(root / "remote"),
    }
    (root / "built.json").write_text(json.dumps(info), encoding="utf-8")


def shared(folder: Path, base_url: str) -> Reproduced:
    """The session's repository, built by the first caller (under a lock); a failed build is reported to every
    caller, not retried."""
    from filelock import FileLock

    root = folder / "reproduced"
    with FileLock(folder / "reproduced.lock"):
        failed = root / "failed.txt"
        if failed.is_file():
            raise RuntimeError(f"the session's reproduced repository failed to build:\n{failed.read_text()}")
        if not (root / "built.json").is_file():
            try:
                build(root, folder / "served", base_url)
            except BaseException:
                root.mkdir(parents=True, exist_ok=True)
                failed.write_text(traceback.format_exc(), encoding="utf-8")
                raise
    info = json.loads((root / "built.json").read_text(encoding="utf-8"))
    return Reproduced(root / "repo", info["log"], info["url"], Path(info["archive"]), Path(info["remote"]))
