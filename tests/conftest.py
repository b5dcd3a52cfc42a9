"""Shared fixtures: generated archives, a local HTTP server, features cached once per session, and the session's
one reproduced repository (tests/reproduced.py).

The controller process (the only process with `-n 0`) makes a folder that every pytest-xdist worker shares and
serves it over HTTP for the whole session; the workers learn both from it (pytest_configure_node).
Helpers the tests call (running dvc or a stage, the small configurations) are in tests/helpers.py."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from synthetic.datasets import make_archive
from tests import reproduced as reproduced_repository
from tests.helpers import SMALL_FEATURES
from tests.http_server import FileServer


def pytest_configure(config) -> None:
    # A shell starts a background job (`pytest ... &`, nohup) with SIGINT ignored, and every process the tests
    # start would inherit that: the tests that send SIGINT stand for a terminal's Ctrl-C, so give it back.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(config, "workerinput"):  # a worker: the controller's shared folder and server
        config.shared = json.loads(config.workerinput["shared"])
        return
    folder = Path(tempfile.mkdtemp(prefix="pytest-shared-"))
    (folder / "served").mkdir()
    server = FileServer(folder=folder / "served").__enter__()
    config.shared = {"folder": str(folder), "base": server.base}
    config.shared_server = server


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist, in the controller: hand each worker the shared folder and the server's address."""
    node.workerinput["shared"] = json.dumps(node.config.shared)


def pytest_unconfigure(config) -> None:
    server = getattr(config, "shared_server", None)
    if server is not None:
        server.__exit__(None, None, None)
        shutil.rmtree(config.shared["folder"], ignore_errors=True)


@pytest.fixture(scope="session")
def reproduced(pytestconfig) -> reproduced_repository.Reproduced:
    """The README's first run, made once per session: read its files, copy() it to run anything."""
    return reproduced_repository.shared(Path(pytestconfig.shared["folder"]), pytestconfig.shared["base"])


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
def feature_cache(pytestconfig) -> dict[str, Path]:
    """Generated images, their split and cached features, made in-process once per session (by the first worker
    that asks, under a file lock in the controller's shared folder) and only read after."""
    from filelock import FileLock

    root = Path(pytestconfig.shared["folder"]) / "feature_cache"
    paths = {"root": root, "images": root / "images", "split": root / "split", "features": root / "features"}
    made = root.with_suffix(".made")  # beside the folder: only the three folders are inside it
    with FileLock(root.with_suffix(".lock")):
        if not made.exists():
            from stages.features import extract_features
            from stages.split import list_images, split_images, write_manifests
            from synthetic.datasets import make_image_folders
            from transfer.core.params import FeaturesParams

            shutil.rmtree(root, ignore_errors=True)  # what a failed attempt left
            make_image_folders(paths["images"], n_classes=4, per_class=15, size=40, seed=3, extras=False)
            write_manifests(split_images(list_images(paths["images"]), 0.2, 0.2, 0), paths["split"])
            extract_features(paths["images"], paths["split"], paths["features"], FeaturesParams(**SMALL_FEATURES))
            made.touch()
    return paths


@pytest.fixture(autouse=True)
def _forget_credentials():
    """Each test starts with no credential remembered for hiding (transfer/core/redact.py keeps them per process)."""
    from transfer.core import redact

    yield
    redact.forget()


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject.toml): a worker per core the process may use, as memory allows. The suite is CPU-bound:
    measured side by side (`python -m benchmarks.suite --one-more-worker`, benchmarks/results/suite_cpu.json), a
    worker per core has been faster than one more. A worker with the stages it starts peaks near 4 GiB, so a machine
    that shows many cores but holds little memory gets fewer."""
    import os

    from transfer.core.machine_memory import available_memory

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    room = available_memory()
    return max(1, min(cores, room[0] // (4 * 2**30) if room else cores))
