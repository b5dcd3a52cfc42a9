"""Helpers the tests import: commands and `dvc` in scratch repositories, one way to run a stage as DVC runs it,
and the small configurations of the in-process tests. Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from synthetic import repos as scratch_repo
from synthetic.repos import ROOT, subprocess_env, write_params

SMALL_FEATURES = dict(backbone="resnet50", backend="tensorflow", weights=None, image_size=32, batch_size=8)
SMALL_TRAIN = dict(
    head="dense", epochs=30, batch_size=16, learning_rate=0.001, hidden_units=64, dropout=0.5, logistic_c=1.0, seed=7
)


def sh(cwd: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in cwd, capturing output; on an unexpected status, fail showing its output."""
    try:
        return scratch_repo.run(cwd, *args, check=check, timeout=timeout)
    except scratch_repo.CommandFailed as error:
        pytest.fail(str(error))


def dvc(repo: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "dvc", *args, check=check, timeout=timeout)


def make_repo(path: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding the project's pipeline and the given params, committed."""
    try:
        return scratch_repo.make_repo(path, params)
    except scratch_repo.CommandFailed as error:
        pytest.fail(str(error))


def stage_command(module: str, *args: str | Path) -> tuple[list[str], dict[str, str]]:
    """`python -m stages.<module> args` and its environment, importing this checkout's stages from any folder."""
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT)}
    return [sys.executable, "-m", f"stages.{module}", *map(str, args)], env


def holding(env: dict[str, str], mark: Path, **hold: str) -> dict[str, str]:
    """`env` with tests/hold/sitecustomize.py active: HOLD_DECODING or HOLD_TRAINING, the pid written to `mark`."""
    path = os.pathsep.join(filter(None, [str(ROOT / "tests/hold"), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "HOLD_MARK": str(mark), **hold}


def holding_decoding(env: dict[str, str], split_dir: Path, mark: Path) -> dict[str, str]:
    """`env` for a features run that decodes every image but the last one it reads (the last of the last part) and
    then waits there until killed, having written the holding worker's pid to `mark`: a stage that cannot finish
    before the test acts."""
    from transfer.core.manifests import read_manifests

    last = list(read_manifests(split_dir).values())[-1]["path"].iloc[-1]
    return holding(env, mark, HOLD_DECODING=f"/{last}")


FEATURES_ARGS = ("data/images", "data/split", "data/features")


def features_project(folder: Path, per_class: int = 30) -> Path:
    """A folder with params.yaml, data/images and data/split: what the features stage reads (random-init resnet50 at
    32 px, batches of 4)."""
    import yaml

    from stages.split import list_images, split_images, write_manifests
    from synthetic.datasets import make_image_folders

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["features"].update(backbone="resnet50", weights=None, image_size=32, batch_size=4)
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    images = folder / "data" / "images"
    make_image_folders(images, n_classes=3, per_class=per_class, size=32, seed=5, extras=False)
    write_manifests(split_images(list_images(images), 0.2, 0.2, 42), folder / "data" / "split")
    return folder


def output_files(folder: Path) -> dict[str, bytes]:
    """Every file under folder (POSIX relative path: bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_stage(
    module: str, *args: str | Path, cwd: Path, params: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run a stage (or transfer.artifacts.predict) in its own process in cwd, as dvc.yaml does; params, when given, are
    written to cwd/params.yaml first. The exit status is the caller's to check."""
    if params is not None:
        write_params(cwd, params)
    command, env = stage_command(module, *args)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60, process=None, log: Path | None = None):
    """Wait until condition() is true and return its value: an event, watched every 20 ms, with a bound. Fails if
    `process` (a Popen) ends first or the time runs out, showing the end of `log` when given."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        tail = f":\n{log.read_text(errors='replace')[-4000:]}" if log else ""
        assert process is None or process.poll() is None, f"the process ended before {what}{tail}"
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting until {what}{tail}"
        time.sleep(0.02)
    return result


def fetch(url: str, dest: Path, md5: str | None, partial_dir: Path, **options) -> Path:
    """What the download stage does with one URL: receive it verified, then move it to `dest`."""
    import shutil

    from transfer.fetch.downloads import receive

    partial, _ = receive(url, partial_dir, md5, **options)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(partial, dest)
    return Path(dest)


def predict(model, classes: list[str], image_size: int, paths, top: int):
    """predict's classify() collected: ({path: [(label, probability), ...]}, {path: why it could not be read})."""
    from transfer.artifacts.predict import classify

    results, errors = {}, {}
    for path, ranked, reason in classify(model, classes, image_size, paths, top):
        if ranked is None:
            errors[path] = reason
        else:
            results[path] = ranked
    return results, errors


# Loads classifiers with nothing but Keras: the project is not importable, as for a `dvc artifacts get` client.
# Arguments: site-packages, the images (.npy), then each model file; prints one JSON line per model.
PLAIN_CLIENT = """
import json, os, sys, urllib.parse
sys.path.append(sys.argv[1])  # site-packages alone: no .pth file runs, so the editable install's finder is absent
try:
    import transfer
except ImportError:
    pass
else:
    sys.exit(f"the project is importable: {transfer.__file__}")
import keras, numpy as np
images = np.load(sys.argv[2])
for path in sys.argv[3:]:
    model = keras.saving.load_model(path)
    names = [urllib.parse.unquote(n.replace(".", "%")) for n in model.layers[-1].name.split(">")[1:]]
    probabilities = np.asarray(model.predict_on_batch(images)).tolist()
    print(json.dumps({"backend": keras.config.backend(), "classes": names, "probabilities": probabilities}))
"""


def assert_plain_keras_agrees(model_paths: list[Path], images, backend: str, workdir: Path) -> None:
    """Each model file, loaded by `keras.saving.load_model` in one fresh Python that has site-packages but not the
    project, on the given Keras backend, names the classes and gives the probabilities (uint8 images) the project's
    loader gives here."""
    import sysconfig

    import numpy as np

    from transfer.artifacts.predict import load_classifier

    np.save(workdir / "images.npy", images)
    (workdir / "client.py").write_text(PLAIN_CLIENT)
    env = {key: value for key, value in subprocess_env().items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-S", "client.py", sysconfig.get_paths()["purelib"], "images.npy", *map(str, model_paths)],
        cwd=workdir,
        env={**env, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(model_paths) :]]
    for model_path, answer in zip(model_paths, answers, strict=True):
        model, classes, _ = load_classifier(model_path)
        assert answer["backend"] == backend and answer["classes"] == classes, model_path
        np.testing.assert_allclose(answer["probabilities"], np.asarray(model.predict_on_batch(images)), atol=1e-5)
