"""Shared fixtures: generated archives, a local HTTP server, and throwaway DVC repositories."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.http_server import FileServer
from tools.synthetic import make_archive

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "tools", ".gitignore"]


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def subprocess_env() -> dict[str, str]:
    """The environment for `dvc` and `python -m stages...`: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def sh(cwd: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in cwd, capturing output; on an unexpected status, fail showing its output."""
    result = subprocess.run(args, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def pipeline_params(url: str, md5: str | None, **overrides) -> dict:
    """params.yaml for tests: a local archive, random-init backbone at 32 px, small batches."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(url=url, md5=md5)
    params["features"].update(weights=None, image_size=32, batch_size=32)
    params["train"].update(epochs=30, batch_size=16, learning_rate=0.003, hidden_units=128)
    for key, value in overrides.items():
        section, name = key.split(".")
        params[section][name] = value
    return params


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(path: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding the project's pipeline and the given params, committed."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, path / name)
    write_params(path, params)
    sh(path, "git", "init", "-q", "-b", "main")
    sh(path, "git", "config", "user.email", "tests@example.com")
    sh(path, "git", "config", "user.name", "tests")
    sh(path, sys.executable, "-m", "dvc", "init", "-q")
    sh(path, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    sh(path, sys.executable, "-m", "dvc", "config", "core.autostage", "true")
    sh(path, "git", "add", "-A")
    sh(path, "git", "commit", "-qm", "pipeline")
    return path


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "dvc", *args, check=check)


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


SMALL_FEATURES = dict(backbone="resnet50", weights=None, image_size=32, batch_size=8)
SMALL_TRAIN = dict(head="dense", epochs=8, batch_size=16, learning_rate=0.001, hidden_units=64, dropout=0.5,
                   logistic_c=1.0, seed=7)


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
