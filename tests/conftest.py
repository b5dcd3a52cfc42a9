"""Shared fixtures: generated archives, a local HTTP server, and features cached once per session.

Helpers the tests call (running dvc or a stage, the small configurations) are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from testing.synthetic import make_archive
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
    from testing.synthetic import make_image_folders
    from transfer.core.params import FeaturesParams

    root = tmp_path_factory.mktemp("cache")
    images, split, features = root / "images", root / "split", root / "features"
    make_image_folders(images, n_classes=4, per_class=15, size=40, seed=3, extras=False)
    write_manifests(split_images(list_images(images), 0.2, 0.2, 0), split)
    extract_features(images, split, features, FeaturesParams(**SMALL_FEATURES))
    return {"root": root, "images": images, "split": split, "features": features}
