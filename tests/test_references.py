"""Facts in one place: every repository path, `python -m` module, dotted project module, test name, `make`
target and document section that the README, docs/, params.yaml, benchmarks/README.md and the code's messages
and comments name exists, so that a rename or a rewritten section cannot leave a stale pointer behind.

In code, only the strings (the messages users see) and comments are read. A pipeline output (an `outs`, `metrics`
or `plots` path of a dvc.yaml, or a dvc.lock), a path git ignores (scratch folders, DVC's cache), a destination
(`-> benchmarks/results/x.json`) and anything with a placeholder (`stages/<name>.py`, `{train,val,test}`) are
named before they exist, so they are not looked for."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from functools import cache
from pathlib import Path

import pytest
import yaml

from synthetic.repos import ROOT, pipeline_files

PROJECT_PACKAGES = ("transfer", "stages", "tools", "synthetic", "tests", "benchmarks")


def sources() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "params.yaml"]
    docs += [ROOT / "benchmarks/README.md", ROOT / "metrics/README.md"]
    code = [path for folder in ("transfer", "stages", "tools") for path in sorted((ROOT / folder).rglob("*.py"))]
    return docs + code


@cache
def tracked_top_level() -> frozenset[str]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return frozenset(line.split("/")[0] for line in names.splitlines())


@cache
def pipeline_outputs() -> tuple[str, ...]:
    found = []
    for pipeline in (ROOT / name for name in pipeline_files()):
        for stage in yaml.safe_load(pipeline.read_text())["stages"].values():
            for key in ("outs", "metrics", "plots"):
                for entry in stage.get(key, []):
                    found.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    found += pipeline.get("metrics", []) + [next(iter(entry)) for entry in pipeline.get("plots", [])]
    return tuple(path.rstrip("/") for path in found)


def is_output(path: str) -> bool:
    path = path.rstrip("/")
    if path.split("/")[-1] == "dvc.lock" or any(
        path == out or path.startswith(out + "/") for out in pipeline_outputs()
    ):
        return True
    # A folder that holds outputs only (metrics/train) is made by the run, too.
    return any(out.startswith(path + "/") for out in pipeline_outputs()) and not (ROOT / path).exists()


def ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0


def readable_text(path: Path) -> str:
    """What a reader sees of a file: all of a document; of Python code, its strings and comments."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    kinds = (tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING))
    return "\n".join(t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type in kinds)


def headings(path: Path) -> list[str]:
    """The Markdown headings of a file, outside fenced code blocks, as their text (backticks kept)."""
    found, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#").strip())
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def module_exists(dotted: str) -> bool:
    """A project module (a/b/c.py or a/b/c/__init__.py), or a top-level name defined in one (a.b.function)."""
    parts = dotted.split(".")
    path = ROOT.joinpath(*parts)
    if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
        return True
    parent = ROOT.joinpath(*parts[:-1]).with_suffix(".py")
    return parent.is_file() and parts[-1] in defined_names(parent)


@cache
def defined_names(path: Path) -> frozenset[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return frozenset(names)


def defined_test(file: str, name: str) -> bool:
    path = ROOT / "tests" / file
    if not path.is_file():
        return False
    first, *rest = name.split("::")
    first = first.split("[")[0]
    if first not in defined_names(path):
        return False
    if not rest:
        return True
    (cls,) = [node for node in ast.parse(path.read_text()).body if getattr(node, "name", None) == first]
    return rest[0].split("[")[0] in {getattr(node, "name", None) for node in ast.iter_child_nodes(cls)}


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([a-z][\w-]*):", text, flags=re.MULTILINE))


PATH = re.compile(r"(?<![\w./$~-])(\.?[\w-]+(?:/[\w.-]+)*/?)(?![\w<{*…$\[-])")
MODULE = re.compile(r"(?<![\w./-])((?:" + "|".join(PROJECT_PACKAGES) + r")(?:\.\w+)+)(?![\w<{*-])")
TEST = re.compile(r"(?<![\w./-])(?:tests/)?(test_\w+?)(?:\.py)?(?:::(\w+(?:::\w+)?)|(?<=\.py))(?![\w/])")
TEST_IN_BACKTICKS = re.compile(r"`(test_\w+)`")
DESTINATION = re.compile(r"-> \S+")
LINK = re.compile(r"\]\(([^)\s#]*)#([\w-]+)\)")
QUOTED_SECTION = re.compile(r"([\w./-]*(?:README|\.md))\)?(?:,| \(|:) ?[\"“]([^\"”\n]+)[\"”]")
README_COLON = re.compile(r"\bREADME(?:\.md)?: ([A-Z][\w ]+)")
MAKE = re.compile(r"`make ([a-z][\w-]*)`")


def document(name: str, where: Path) -> Path:
    """The file a reference names: README means the top-level one; otherwise from the root, or beside `where`."""
    if name in ("README", "README.md"):
        return ROOT / "README.md"
    return ROOT / name if (ROOT / name).exists() else where.parent / name


def stale(text: str, where: Path) -> list[str]:
    """What `text` (the contents of `where`) names that does not exist, one line each."""
    problems = []
    text = DESTINATION.sub("", text)
    for token in PATH.findall(text):
        token = token.rstrip(".")
        first = token.split("/")[0]
        if ("/" not in token and "." not in token) or first not in tracked_top_level():
            continue
        if is_output(token) or ignored(token):
            continue
        if not (ROOT / token).exists():
            problems.append(f"path {token}")
    for dotted in MODULE.findall(text):
        dotted = dotted.removesuffix(".py").rstrip(".")
        if not module_exists(dotted):
            problems.append(f"module {dotted}")
    for module, name in TEST.findall(text):
        file = f"{module}.py"
        if not (ROOT / "tests" / file).is_file():
            problems.append(f"test file {file}")
        elif name and not defined_test(file, name):
            problems.append(f"test {file}::{name}")
    for name in TEST_IN_BACKTICKS.findall(text):  # a test module or test function named alone
        if not (ROOT / "tests" / f"{name}.py").is_file() and not any(
            name in defined_names(path) for path in (ROOT / "tests").glob("test_*.py")
        ):
            problems.append(f"test {name}")
    for file, anchor in LINK.findall(text):
        target = where if not file else document(file, where)
        if not target.is_file() or anchor not in {slug(h) for h in headings(target)}:
            problems.append(f"section {file}#{anchor}")
    sections = QUOTED_SECTION.findall(text) + [("README.md", name) for name in README_COLON.findall(text)]
    for file, section in sections:
        target = document(file, where)
        if not target.is_file() or not any(h.startswith(section.strip()) for h in headings(target)):
            problems.append(f'section {file}, "{section.strip()}"')
    for target in MAKE.findall(text):
        if target not in make_targets():
            problems.append(f"make target {target}")
    return problems


@pytest.mark.parametrize("path", sources(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_reference_exists(path):
    assert stale(readable_text(path), path) == []


STALE = {
    "path": ("see transfer/core/extractor.py for the backbone", "path transfer/core/extractor.py"),
    "folder": ("the stages live in `stage/`", None),  # not a tracked top-level name: not a path of this repo
    "module": ("run `python -m tools.synthetic`", "module tools.synthetic"),
    "attribute": ("`transfer.core.params.nothing_here`", "module transfer.core.params.nothing_here"),
    "test file": ("tests/test_nothing.py keeps it", ["path tests/test_nothing.py", "test file test_nothing.py"]),
    "test name": ("tests/test_params.py::test_that_was_renamed", "test test_params.py::test_that_was_renamed"),
    "anchor": ("[GPUs](docs/backends.md#cuda-on-windows)", "section docs/backends.md#cuda-on-windows"),
    "quoted": ('documented in README.md ("Parameters")', 'section README.md, "Parameters"'),
    "colon": ("install it (README: Backends and GPUs)", 'section README.md, "Backends and GPUs"'),
    "make": ("run `make docs`", "make target docs"),
    "short test": ("| `test_backends::test_gone` |", "test test_backends.py::test_gone"),
    "test alone": ("checked by `test_nothing_here`", "test test_nothing_here"),
    "code": (Path("transfer/core/devices.py"), "path transfer/formats.py"),
}


@pytest.mark.parametrize("kind", STALE)
def test_a_stale_reference_of_each_kind_is_reported(kind, tmp_path):
    text, expected = STALE[kind]
    if isinstance(text, Path):  # in code: a message, and a comment; the code itself is not prose
        code = tmp_path / text.name
        code.write_text(
            'stages.remove(stage)  # see transfer/formats.py\nraise StageError("see transfer/formats.py")\n'
        )
        text = readable_text(code)
        assert stale(text, code) == [expected, expected]
        return
    expected = expected if isinstance(expected, list) else [expected] if expected else []
    assert stale(text, ROOT / "README.md") == expected


@pytest.mark.parametrize(
    "text",
    [
        "see transfer/core/images.py and `docs/`",
        "`python -m tools.verify`, transfer.core.params.load, synthetic.datasets",
        "tests/test_params.py::test_repository_params_are_valid_and_documented",
        '[the estimate](docs/memory.md#the-estimate), docs/memory.md, "The estimate"',
        "`make test-fast`, stages/<name>.py, metrics/test.json, models/classifier.keras, metrics/train/",
        "release/dvc.lock, benchmarks/work/, .dvc/cache/files, written -> benchmarks/results/new.json",
        "`test_backends::test_a_backend_that_is_not_installed_is_a_clear_error`, `test_train`",
    ],
)
def test_a_live_reference_is_not_reported(text):
    assert stale(text, ROOT / "README.md") == []
