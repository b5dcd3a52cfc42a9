"""Shared fixtures: generated archives, a local HTTP server, and throwaway DVC repositories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.http_server import FileServer
from tools import scratch_repo
from tools.scratch_repo import ROOT, md5_of, subprocess_env, write_params  # noqa: F401  (used by test modules)
from tools.scratch_repo import small_params as pipeline_params  # noqa: F401
from tools.synthetic import make_archive


def sh(cwd: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in cwd, capturing output; on an unexpected status, fail showing its output."""
    try:
        return scratch_repo.run(cwd, *args, check=check, timeout=timeout)
    except scratch_repo.CommandFailed as error:
        pytest.fail(str(error))


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "dvc", *args, check=check)


def make_repo(path: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding the project's pipeline and the given params, committed."""
    try:
        return scratch_repo.make_repo(path, params)
    except scratch_repo.CommandFailed as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def archives(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Small archives in each layout, built once per session: {name: (path, expected extract result)}."""
    folder = tmp_path_factory.mktemp("archives")
    specs = {
        "official": dict(layout="official", archive="caltech-101.zip"),
        "legacy": dict(layout="legacy", archive="101_ObjectCategories.tar.gz"),
        "user_zip": dict(layout="user", archive="own.zip", image_format="PNG", extras=False),
        "user_tar": dict(layout="user", archive="own.tar", root="mydata"),
    }
    built = {}
    for name, spec in specs.items():
        path = folder / spec.pop("archive")
        built[name] = (path, make_archive(path, n_classes=4, per_class=12, size=32, **spec))
    return built


@pytest.fixture(scope="session")
def server():
    with FileServer() as running:
        yield running


SMALL_FEATURES = dict(backbone="resnet50", backend="tensorflow", weights=None, image_size=32, batch_size=8)
SMALL_TRAIN = dict(
    head="dense", epochs=8, batch_size=16, learning_rate=0.001, hidden_units=64, dropout=0.5, logistic_c=1.0, seed=7
)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> dict[str, Path]:
    """Generated images, their split and cached features, made in-process once per session."""
    from stages.features import extract_features
    from stages.params import FeaturesParams
    from stages.split import list_images, split_images, write_manifests
    from tools.synthetic import make_image_folders

    root = tmp_path_factory.mktemp("cache")
    images, split, features = root / "images", root / "split", root / "features"
    make_image_folders(images, n_classes=4, per_class=15, size=40, seed=3, extras=False)
    write_manifests(split_images(list_images(images), 0.2, 0.2, 0), split)
    extract_features(images, split, features, FeaturesParams(**SMALL_FEATURES))
    return {"root": root, "images": images, "split": split, "features": features}
