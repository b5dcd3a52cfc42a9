"""dvc.yaml against the code: each stage's code deps (files or folders) cover every project module its command
can execute, each entry is used, and the expensive stages list nothing they do not execute; each stage lists
exactly the params keys it reads; every output DVC caches is ignored by a committed .gitignore.

Derived from the source with `ast`, so a new import (also one inside a function) or a new params key read
fails here until dvc.yaml says so; otherwise `dvc status` would call stale outputs up to date.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthetic.repos import PIPELINE_FILES, ROOT
from transfer.core import params

# The pipeline's stages: those of every dvc.yaml in the project (one, dvc.yaml: docs/experiments.md says why).
PIPELINES = PIPELINE_FILES
STAGES = {
    name: stage
    for pipeline in PIPELINES
    for name, stage in yaml.safe_load((ROOT / pipeline).read_text(encoding="utf-8"))["stages"].items()
}
SECTIONS = params.SECTIONS


def module_files(name: str) -> list[Path]:
    """The project files that importing module `name` executes: each package's __init__.py, then the module."""
    files, parts = [], name.split(".")
    for depth in range(1, len(parts) + 1):
        base = ROOT.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
                break
        else:
            return []  # not a project module (the standard library, an installed package)
    return files


def imported_modules(path: Path) -> set[str]:
    """Every module that an import statement anywhere in the file names, function bodies included."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from transfer.core import params`
    return names


def executed_files(module: str) -> set[Path]:
    """The project files `python -m module` can execute: the module and, transitively, what it imports."""
    seen: set[Path] = set()
    todo = module_files(module)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += [f for name in imported_modules(path) for f in module_files(name)]
    return seen


def stage_module(stage: dict) -> str:
    words = stage["cmd"].split()
    assert words[:2] == ["python", "-m"], f"unexpected command {stage['cmd']!r}"
    return words[2]


def relative(paths) -> set[str]:
    return {Path(p).relative_to(ROOT).as_posix() for p in paths}


# Stages whose needless rerun costs minutes (the backbone over every image): their code deps may cover only code
# they execute, so an edit elsewhere in a folder never reruns them.
EXPENSIVE = {"features"}
# Stages whose output is identified by its bytes, not by the code that made it: the downloaded archive is checked
# by its md5 and as a whole archive, so only the stage's own module is a dependency (docs/development.md).
BYTES_IDENTIFIED = {"download"}
CODE_ROOTS = ("stages", "transfer")


def inert(path: Path) -> bool:
    """A file that executes nothing (a package __init__.py holding only its docstring): no dependency needed."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def code_deps(stage: dict) -> list[str]:
    return [dep for dep in stage.get("deps", []) if dep.split("/")[0] in CODE_ROOTS]


def covered_by(entry: str) -> set[str]:
    """The project's Python files a dependency entry stands for: the file, or every file below the folder."""
    path = ROOT / entry
    files = [path] if path.is_file() else path.rglob("*.py")
    return {f.relative_to(ROOT).as_posix() for f in files if "__pycache__" not in f.parts}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_code_deps_cover_what_it_executes_and_each_entry_is_used(name):
    stage = STAGES[name]
    executed = {p for p in relative(executed_files(stage_module(stage))) if not inert(ROOT / p)}
    declared = {entry: covered_by(entry) for entry in code_deps(stage)}
    covered = set().union(*declared.values())
    if name in BYTES_IDENTIFIED:
        assert list(declared) == [f"stages/{name}.py"], f"dvc.yaml stage {name}: list its module alone as code"
        return
    assert executed <= covered, f"dvc.yaml stage {name}: add to deps {sorted(executed - covered)}"
    unused = [entry for entry, files in declared.items() if not files & executed]
    assert not unused, f"dvc.yaml stage {name}: remove from deps {unused} (nothing there is executed)"
    if name in EXPENSIVE:
        unexecuted = {entry: {f for f in files - executed if not inert(ROOT / f)} for entry, files in declared.items()}
        extra = {entry: sorted(files) for entry, files in unexecuted.items() if files}
        assert not extra, f"dvc.yaml stage {name} reruns for code it does not execute: list exact files for {extra}"


def test_the_dependency_check_fails_on_a_missing_unused_or_too_wide_entry(monkeypatch):
    features = dict(STAGES["features"])
    check = test_stage_code_deps_cover_what_it_executes_and_each_entry_is_used
    for deps, message in [
        ([d for d in features["deps"] if d != "transfer/features"], "add to deps"),
        ([*features["deps"], "transfer/unpack"], "remove from deps"),
        ([*features["deps"], "transfer"], "list exact files"),
    ]:
        monkeypatch.setitem(STAGES, "features", {**features, "deps": deps})
        with pytest.raises(AssertionError, match=message):
            check("features")


def test_pycache_is_ignored_by_dvc_so_folder_deps_do_not_change_when_python_runs():
    patterns = (ROOT / ".dvcignore").read_text(encoding="utf-8").split()
    assert "__pycache__/" in patterns


# Third-party packages whose version cannot change a stage's output bytes: the transport (an archive is checked by its
# md5 and its format), progress bars, and the params file's reading (ruamel, as DVC reads it) and checking.
BYTE_NEUTRAL = {"requests", "urllib3", "tqdm", "yaml", "ruamel", "pydantic"}


def third_party_imports(module: str) -> set[str]:
    """Top-level names of the installed packages the stage's code can import (neither the standard library nor the
    project)."""
    names = {name.split(".")[0] for path in executed_files(module) for name in imported_modules(path)}
    return {n for n in names if n and n not in sys.stdlib_module_names and not module_files(n) and n != "__future__"}


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_whose_bytes_the_pinned_packages_decide_depends_on_the_pins(name):
    shaping = third_party_imports(stage_module(STAGES[name])) - BYTE_NEUTRAL
    listed = "requirements.txt" in STAGES[name].get("deps", [])
    assert listed == bool(shaping), (
        f"dvc.yaml stage {name}: its code imports {sorted(shaping)}, so add requirements.txt to its deps"
        if shaping
        else f"dvc.yaml stage {name}: imports no package that decides its bytes; remove requirements.txt"
    )


def test_the_pins_check_sees_the_packages_a_stage_imports():
    assert {"pandas", "sklearn"} <= third_party_imports("stages.split") - BYTE_NEUTRAL
    assert third_party_imports("stages.source") - BYTE_NEUTRAL == set()


def test_the_import_walk_sees_imports_inside_functions():
    # features imports transfer.features.backbones only inside a function (after choosing the Keras backend); the
    # walk must still find it.
    assert "transfer/features/backbones.py" in relative(executed_files("stages.features"))
    assert "stages/__init__.py" in relative(executed_files("stages.train"))
    assert relative(executed_files("json")) == set()


def attribute_nodes(path: Path) -> list[ast.Attribute]:
    return [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.Attribute)]


def keys_read(module: str) -> set[str]:
    """params keys a stage reads: for each section its own module takes with `params.load().<section>`, the
    fields that the code it can execute reads as attributes (`config.epochs`). Static, so a superset: a field
    name read anywhere in those modules counts."""
    sections = {
        node.attr
        for node in attribute_nodes(module_files(module)[-1])
        if isinstance(node.value, ast.Call)
        and getattr(node.value.func, "attr", None) == "load"
        and node.attr in SECTIONS
    }
    # Fields are read off a name (`config.epochs`); `keras.config.backend()` is not a params field.
    attributes = {
        node.attr
        for p in executed_files(module)
        if p.name != "params.py"
        for node in attribute_nodes(p)
        if isinstance(node.value, ast.Name)
    }
    return {
        f"{section}.{field}" for section in sections for field in SECTIONS[section].model_fields if field in attributes
    }


def declared_keys(stage: dict) -> set[str]:
    """A stage's `params:` with whole sections (`- train`) expanded to their keys."""
    keys = set()
    for entry in stage.get("params", []):
        assert isinstance(entry, str), f"unexpected params entry {entry!r}"
        if "." in entry:
            keys.add(entry)
        else:
            keys.update(f"{entry}.{field}" for field in SECTIONS[entry].model_fields)
    return keys


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_params_are_the_keys_it_reads(name):
    stage = STAGES[name]
    read, declared = keys_read(stage_module(stage)), declared_keys(stage)
    assert declared == read, (
        f"dvc.yaml stage {name}: add to params {sorted(read - declared)}, remove {sorted(declared - read)}"
    )


def test_evaluate_reads_no_params_and_download_only_the_source():
    assert keys_read("stages.evaluate") == set()
    assert keys_read("stages.download") == {"data.url", "data.md5"}


def outputs(cached: bool) -> list[str]:
    paths = []
    for stage in STAGES.values():
        for out in stage.get("outs", []):
            path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            if options.get("cache", True) == cached:
                paths.append(path)
    return paths


def ignored(paths: list[str], tmp_path: Path) -> dict[str, bool]:
    """Which paths the committed top-level .gitignore alone ignores (in a repository holding only that file)."""
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = {}
    for path in paths:
        command = ["git", "check-ignore", "-q", "--no-index", path]
        status = subprocess.run(command, cwd=tmp_path, check=False).returncode
        assert status in (0, 1), f"git check-ignore failed on {path}"
        result[path] = status == 0
    return result


def test_every_cached_output_is_ignored_by_the_committed_gitignore(tmp_path):
    cached = outputs(cached=True)
    assert {"data/raw", "data/features", "models/head.keras", "models/finetuned", "models/classifier.keras"} <= set(
        cached
    )
    paths = cached + [f"{path}/inside" for path in cached]
    assert ignored(paths, tmp_path) == dict.fromkeys(paths, True)


# data/source is `cache: false` but per machine: a link to this machine's archive, never committed (stages/source.py).
UNCACHED_IGNORED = ["data/source"]


def test_per_machine_outputs_are_ignored(tmp_path):
    assert set(UNCACHED_IGNORED) <= set(outputs(cached=False))
    assert ignored(UNCACHED_IGNORED, tmp_path) == dict.fromkeys(UNCACHED_IGNORED, True)


def test_git_tracked_outputs_are_not_ignored_but_their_temporaries_are(tmp_path):
    tracked = [path for path in outputs(cached=False) if path not in UNCACHED_IGNORED]
    assert "metrics/train/metrics.json" in tracked and "metrics/test.json" in tracked
    assert "metrics/finetune/test.json" in tracked
    assert ignored(tracked, tmp_path) == dict.fromkeys(tracked, False)
    assert ignored(UNCACHED_IGNORED, tmp_path) == dict.fromkeys(UNCACHED_IGNORED, True)
    # train's DVCLive folder and evaluate's files are written as temporary siblings first (atomic_output).
    temporaries = ["metrics/.train.tmp/metrics.json", "metrics/.test.json.tmp", "models/.head.keras.tmp.keras"]
    temporaries += ["models/.finetuned.tmp-resume/state.npz"]
    assert ignored(temporaries, tmp_path) == dict.fromkeys(temporaries, True)


def test_no_import_cycle_among_the_project_modules():
    import graphlib

    graph = {}
    for path in [*ROOT.glob("stages/*.py"), *ROOT.rglob("transfer/**/*.py"), *ROOT.glob("tools/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files = [module_files(module) for module in imported_modules(path)]
        imported = {
            ".".join(f[-1].relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for f in files if f
        }
        graph[name] = imported - {name}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the modules of a cycle
