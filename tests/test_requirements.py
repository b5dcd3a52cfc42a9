"""The lock files: requirements.txt pins every package the pipeline needs, and the environment running the tests is
exactly that; each .txt agrees with the direct pins of its .in file; the dev and GPU files include the pipeline's.

Cheap: reads the files and the installed distributions' metadata, builds no environment.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from synthetic.repos import ROOT

LOCKS = {
    "requirements.txt": "requirements.in",
    "requirements-dev.txt": "requirements-dev.in",
    "requirements-gpu.txt": "requirements-gpu.in",
}


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file, comments stripped; `-r` and other options left out."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirements file, failing on any line that is not `name[extras]==version`."""
    found = {}
    for line in requirement_lines(path):
        requirement = Requirement(line)
        versions = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        assert len(requirement.specifier) == 1 and versions, f"{path.name}: {line!r} is not pinned with =="
        found[canonicalize_name(requirement.name)] = versions[0]
    return found


@pytest.mark.parametrize("lock, source", LOCKS.items())
def test_every_line_is_pinned_and_agrees_with_the_direct_pins(lock, source):
    locked, direct = pins(ROOT / lock), pins(ROOT / source)
    assert direct, f"{source} lists no packages"
    assert {name: locked.get(name) for name in direct} == direct, f"{lock} is stale: recompile it from {source}"
    assert re.search(r"uv pip compile " + re.escape(source), (ROOT / lock).read_text()), f"{lock}: not from uv"


@pytest.mark.parametrize("lock", ["requirements-dev.txt", "requirements-gpu.txt"])
def test_dev_and_gpu_files_include_the_pipeline_pins_unchanged(lock):
    assert "-r requirements.txt" in (ROOT / LOCKS[lock]).read_text()
    pipeline, locked = pins(ROOT / "requirements.txt"), pins(ROOT / lock)
    assert {name: locked.get(name) for name in pipeline} == pipeline


def test_the_gpu_file_brings_tensorflow_with_cuda():
    # The CUDA build of the very TensorFlow the CPU lock pins, not a second version to keep in step by hand.
    gpu = [Requirement(line) for line in requirement_lines(ROOT / "requirements-gpu.in")]
    (tensorflow,) = [r for r in gpu if r.name == "tensorflow"]
    assert tensorflow.extras == {"and-cuda"}
    assert str(tensorflow.specifier) == f"=={pins(ROOT / 'requirements.txt')['tensorflow']}"
    gpu_only = set(pins(ROOT / "requirements-gpu.txt")) - set(pins(ROOT / "requirements.txt"))
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= gpu_only


def needed_distributions(names: list[str]) -> dict[str, str]:
    """{canonical name: installed version} of the given distributions and, transitively, everything their
    metadata requires in this environment (markers evaluated, with the extras asked for)."""
    needed: dict[str, str] = {}
    seen: set[tuple[str, frozenset]] = set()
    todo = [Requirement(name) for name in names]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(
                f"{requirement.name} (needed by the pipeline) is not installed: pip install -r requirements-dev.txt"
            )
        extras = requirement.extras or {""}
        needed[name] = distribution.version
        for line in distribution.requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dependency)
    return needed


def test_the_running_environment_is_the_pinned_one():
    direct = list(pins(ROOT / "requirements.in"))
    needed, locked = needed_distributions(direct), pins(ROOT / "requirements.txt")
    assert {"tensorflow", "keras", "dvc", "numpy", "protobuf", "h5py"} <= set(needed)
    unpinned = sorted(set(needed) - set(locked))
    assert not unpinned, f"requirements.txt does not pin {unpinned}: recompile it (command in requirements.in)"
    differing = {name: (version, locked[name]) for name, version in needed.items() if locked[name] != version}
    assert not differing, f"installed vs pinned versions differ: {differing}; pip install -r requirements-dev.txt"
