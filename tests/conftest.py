"""Shared fixtures: generated archives, a local HTTP server, and features cached once per session.

Helpers the tests call (running dvc or a stage, the small configurations) are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic.datasets import make_archive
from tests.helpers import SMALL_FEATURES
from tests.http_server import FileServer


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


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> dict[str, Path]:
    """Generated images, their split and cached features, made in-process once per session."""
    from stages.features import extract_features
    from stages.split import list_images, split_images, write_manifests
    from synthetic.datasets import make_image_folders
    from transfer.core.params import FeaturesParams

    root = tmp_path_factory.mktemp("cache")
    images, split, features = root / "images", root / "split", root / "features"
    make_image_folders(images, n_classes=4, per_class=15, size=40, seed=3, extras=False)
    write_manifests(split_images(list_images(images), 0.2, 0.2, 0), split)
    extract_features(images, split, features, FeaturesParams(**SMALL_FEATURES))
    return {"root": root, "images": images, "split": split, "features": features}


@pytest.fixture(autouse=True)
def _forget_credentials():
    """Each test starts with no credential remembered for hiding (transfer/core/redact.py keeps them per process)."""
    from transfer.core import redact

    yield
    redact.forget()


def pytest_collection_modifyitems(config, items) -> None:
    """Files with end-to-end tests first. pytest-xdist hands each worker whole files in this order, so the long
    files start at once and the short ones fill the gaps, rather than one long file running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's own order is kept


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject.toml): a worker per core the process may use, as memory allows. A worker with the stages
    it starts peaks near 4 GiB; a machine that shows many cores but holds little memory gets fewer workers."""
    import os

    from transfer.core.machine_memory import available_memory

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    room = available_memory()
    return max(1, min(cores, room[0] // (4 * 2**30) if room else cores))
