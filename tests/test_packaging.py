"""The package: a fresh clone stays clean after setup.sh's install, pyproject.toml declares what the code imports
and the one version the download announces, and the pull-request verify job installs what tools.verify imports and
nothing heavier. (That requirements*.txt are compiled from pyproject.toml is `make lock-check`'s, in .ci/run.)"""

from __future__ import annotations

import ast
import shlex
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from synthetic.repos import ROOT
from transfer.fetch.credentials import session

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PROJECT_PACKAGES = ("transfer", "stages", "tools", "synthetic", "tests")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def checkout_copy(dest: Path) -> Path:
    """The files a fresh clone of this checkout would have (tracked, plus new files not ignored), committed."""
    for name in git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone")
    return dest


def test_a_fresh_clone_stays_clean_after_setup_sh(tmp_path):
    """What setup.sh writes into the checkout: .venv, then `pip install --editable .`, whose build (setuptools'
    PEP 660 hooks, in the order pip calls them) writes the egg-info beside pyproject.toml. All of it must be ignored, so
    `git add -A` after the README's set-up commits none of it."""
    repo = checkout_copy(tmp_path / "clone")
    assert "egg-info" not in git(repo, "ls-files"), "the egg-info is tracked: git rm -r --cached it"
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".venv/bin/python").write_text("")
    build = f"""
from setuptools import build_meta
build_meta.get_requires_for_build_editable()
build_meta.prepare_metadata_for_build_editable({str(tmp_path / "meta")!r})
build_meta.build_editable({str(tmp_path / "wheel")!r})
"""
    for out in ("meta", "wheel"):
        (tmp_path / out).mkdir()
    subprocess.run([sys.executable, "-c", build], cwd=repo, check=True, capture_output=True, timeout=300)
    assert list(repo.glob("*.egg-info")), "the build wrote no egg-info: this test no longer sees what pip writes"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def third_party_imports(*roots: Path) -> set[str]:
    """Top-level names of the non-project modules that the given files or folders import, anywhere in a module
    (the stages import heavy libraries inside functions), following imports of project modules."""
    todo = [path for root in roots for path in ([root] if root.is_file() else sorted(root.rglob("*.py")))]
    seen: set[Path] = set()
    found: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from tools import lock_check` imports the module tools.lock_check (or a name in tools/__init__).
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in PROJECT_PACKAGES:
                    found.add(name.split(".")[0])
                    continue
                module = ROOT / name.replace(".", "/")
                todo += [p for p in (module.with_suffix(".py"), module / "__init__.py") if p.is_file()]
    return {name for name in found if name not in sys.stdlib_module_names}


def distributions_of(modules: set[str]) -> set[str]:
    """The installed distributions that provide the given top-level modules."""
    provided = metadata.packages_distributions()
    missing = sorted(name for name in modules if name not in provided)
    assert not missing, f"no installed distribution provides {missing}"
    return {canonicalize_name(dist) for name in modules for dist in provided[name]}


def closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions a `pip install` of the requirements brings, as installed here."""
    found: set[str] = set()
    todo = [Requirement(line) for line in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        for line in metadata.distribution(name).requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                todo.append(dependency)
    return found


# Imported only by optional code: the features stage's other Keras backends (docs/backends.md).
OPTIONAL = {"jax", "torch"}


def test_pyproject_declares_every_library_the_package_and_stages_import():
    declared = {canonicalize_name(Requirement(line).name) for line in PYPROJECT["dependencies"]}
    # The package (transfer/, tools/) and the stages it runs.
    imported = third_party_imports(ROOT / "transfer", ROOT / "tools", ROOT / "stages") - OPTIONAL
    assert {"keras", "numpy", "requests", "dvclive"} <= imported
    needed = distributions_of(imported)
    assert needed <= closure(PYPROJECT["dependencies"]), f"add to pyproject.toml: {sorted(needed - declared)}"
    unused = declared - needed - {"tensorflow"}  # Keras' backend
    assert not unused, f"pyproject.toml declares what nothing imports: {sorted(unused)}"


def test_the_download_announces_the_one_version():
    assert metadata.version("dvc-transfer-learning") == PYPROJECT["version"]
    agent = session("https://example.org/a.zip").headers["User-Agent"]
    assert agent == f"dvc-transfer-learning/{PYPROJECT['version']}"


def install_step(job: str) -> list[str]:
    workflow = yaml.safe_load((ROOT / ".github/workflows/reproducibility.yml").read_text())
    (run,) = [step["run"] for step in workflow["jobs"][job]["steps"] if step.get("name") == "Install"]
    words = shlex.split(run, comments=True)
    assert words[:2] == ["pip", "install"], run
    return words[2:]


def test_the_verify_job_installs_what_tools_verify_imports_and_not_tensorflow():
    words = install_step("verify")
    # Exact versions from the lock as constraints, the requirements named: `-c requirements.txt dvc`.
    assert words[:2] == ["-c", "requirements.txt"], words
    installed = closure(words[2:])
    needed = distributions_of(third_party_imports(ROOT / "tools/verify.py"))
    assert needed <= installed, f"tools.verify imports {sorted(needed - installed)}, which the job does not install"
    assert not {"tensorflow", "keras", "torch", "jax"} & installed


def test_the_import_scan_sees_lazy_imports_and_submodules():
    # verify reaches lock_check through `from tools import lock_check`, and lock_check imports dvc_data inside
    # functions only: the scan must see both, or the check above proves nothing.
    assert {"dvc", "dvc_data", "yaml"} <= third_party_imports(ROOT / "tools/verify.py")
