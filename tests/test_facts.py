"""Figures in the docs come from files: every throughput, time, size or speed-up the README, docs/ and
benchmarks/README.md state is a number that a result under benchmarks/results/ holds (at the precision the text
gives it, in the unit it is written in), or a default the code or params.yaml sets, or its sentence says "estimate"
(a projection) or "target" (a requirement).
Facts about Caltech-101 itself (its classes, images and the split they give) are computed from the class list."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from synthetic.repos import ROOT

DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "benchmarks" / "results"
NUMBER = r"(?<![\w.,/-])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
# Unit as written -> the factors a stored number may need to be divided by to be in that unit.
UNITS = {
    "images/s": (1,),
    "img/s": (1,),
    "ms": (1e-3, 1),
    "s": (1,),
    "seconds": (1,),
    "minutes": (60, 1),
    "min": (60, 1),
    "hours": (3600, 1),
    "h": (3600, 1),
    "kB": (1e3, 2**10, 1),
    "KB": (1e3, 2**10, 1),
    "MB": (1e6, 2**20, 1),
    "MiB": (2**20, 1),
    "GB": (1e9, 2**30, 1),
    "GiB": (2**30, 1),
    "x": (1,),
    "×": (1,),
}
UNIT = r"\s?(" + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True)) + r")(?![\w/])"
FIGURE = re.compile(NUMBER + UNIT)
# The first number of a range ("1,200-1,250 images/s", "8-15 minutes") is a figure in the same unit.
RANGE_START = re.compile(NUMBER + r"\s?[-–]\s?(?=(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?" + UNIT + ")")


def prose(text: str) -> str:
    """The text without fenced code blocks, inline code and link targets: commands and paths are not figures."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def sentences(text: str) -> list[str]:
    """Sentences, and table rows each with its table's header row (a figure's "estimate" may be anywhere in its
    sentence, or in its column's header)."""
    parts = []
    for block in re.split(r"\n\s*\n", text):
        if block.lstrip().startswith("|"):
            header, *rows = block.strip().splitlines()
            parts += [f"{header} {row}" for row in rows[1:]]  # rows[0] is the |---| line
        else:
            parts += re.split(r"(?<=[.;:!?])\s+(?=[A-Z(*])", " ".join(block.split()))
    return parts


# Keys whose numbers are a benchmark's settings, not what it measured: a doc figure is never matched to them.
SETTINGS = {"batch", "batch_size", "batch_sizes", "classes", "cores", "cores_usable", "cpus", "dropout", "epochs"}
SETTINGS |= {"hidden_units", "image_size", "images", "learning_rate", "logistic_c", "memory_sets", "per_class", "seed"}
SETTINGS |= {"size", "steps", "test", "train", "val", "train.learning_rate", "load_average_1min_before"}


def numbers(value: object, key: str = "") -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [] if key in SETTINGS else [float(value)]
    if isinstance(value, dict):
        return [n for name, item in value.items() for n in numbers(item, name)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item, key)]
    return []


def measured() -> list[float]:
    values = [n for path in sorted(RESULTS.rglob("*.json")) for n in numbers(json.loads(path.read_text()))]
    return values


def configured() -> list[float]:
    """Defaults the code declares (`default=1800.0`, a constant `= 300`) and the values params.yaml sets."""
    values = []
    for path in [*ROOT.glob("stages/*.py"), *ROOT.glob("transfer/**/*.py"), *ROOT.glob("tools/*.py")]:
        values += [float(n) for n in re.findall(r"(?:default=|^[A-Z_]+ = )(\d+(?:\.\d+)?)\b", path.read_text(), re.M)]
    values += [float(n) for n in re.findall(r":\s+(\d+(?:\.\d+)?)\b", (ROOT / "params.yaml").read_text())]
    return values


def unsupported(text: str, known: list[float]) -> list[str]:
    """Each figure of the text that no known number gives, with its sentence."""
    found = []
    for sentence in sentences(prose(text)):
        if "estimate" in sentence.lower() or "target" in sentence.lower():  # a projection or a requirement
            continue
        figures = [(m, m.group(3)) for m in FIGURE.finditer(sentence)]
        figures += [(m, m.group(3)) for m in RANGE_START.finditer(sentence)]  # the unit the range ends with
        for match, unit in figures:
            whole, decimals = match.group(1).replace(",", ""), match.group(2) or ""
            figure, places = float(f"{whole}.{decimals}" if decimals else whole), len(decimals)
            if not any(round(value / factor, places) == figure for value in known for factor in UNITS[unit]):
                found.append(f"{match.group(0)!r} in: {sentence.strip()[:160]}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_figure_in_the_docs_comes_from_a_result_or_the_code_or_says_estimate(doc):
    assert unsupported(doc.read_text(encoding="utf-8"), measured() + configured()) == []


def test_a_remembered_figure_fails_and_a_measured_or_estimated_one_passes():
    known = [706.43, 1800.0, 3.07]
    assert unsupported("The stage ran 706 images/s, about 3.1x the tutorial.", known) == []
    assert unsupported("It gives up after 30 minutes.", known) == []
    assert unsupported("About 2 hours on a CPU (an estimate).", known) == []
    assert unsupported("The `features` stage (`--batch 256`) is fast.", known) == []
    assert unsupported("On a GPU it ran 7,983 images/s.", known) == [
        "'7,983 images/s' in: On a GPU it ran 7,983 images/s."
    ]
    table = "| stage | time | size |\n|---|---|---|\n| features | 15 min | 1.2 GB |\n"
    assert len(unsupported(table, known)) == 2
    assert unsupported(table.replace("| time |", "| time (estimate) |"), known) == []


def test_caltech_101_facts_the_readme_states_come_from_its_class_list():
    """tests/data/caltech101_classes.tsv: the official archive's folders and image counts."""
    from stages.split import split_images

    table = pd.read_csv(ROOT / "tests" / "data" / "caltech101_classes.tsv", sep="\t")
    kept = table[table["class"] != "BACKGROUND_Google"]
    rows = [
        (f"{name}/{i:04d}.jpg", name) for name, n in zip(kept["class"], kept["images"], strict=True) for i in range(n)
    ]
    parts = split_images(pd.DataFrame(rows, columns=["path", "label"]), 0.2, 0.2, 42)
    sizes = [f"{len(parts[part]):,}" for part in ("train", "val", "test")]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"{len(rows):,} images in {len(kept)} classes" in readme
    assert f"splits them {' / '.join(sizes)}" in readme
