"""Read params.yaml in one place and check every key before any stage starts work.

Each stage calls `load()`; a typo, a wrong type or a value out of range stops it with a message that
names the key, the value and what is allowed, and an unknown key suggests the nearest known one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transfer.errors import StageError

BACKBONES = (
    "resnet50",
    "resnet101",
    "resnet50v2",
    "efficientnetv2b0",
    "mobilenetv3large",
    "convnexttiny",
)
HEADS = ("dense", "logistic")
# Keras 3 backends the features stage can run on (transfer/devices.py).
BACKENDS = ("tensorflow", "jax", "torch")

# What this process loaded, and the keys it has read since: run() checks those against params.yaml at the end.
_loaded: tuple[Path, dict] | None = None
_read: set[str] = set()


class _Section:
    """A params section that records which of its keys the stage reads (attribute access: `config.epochs`)."""

    section = ""

    def __getattribute__(self, name: str) -> Any:
        cls = type(self)
        if name in cls.__dataclass_fields__:
            _read.add(f"{cls.section}.{name}")
        return object.__getattribute__(self, name)


@dataclass(frozen=True)
class DataParams(_Section):
    section = "data"
    url: str
    md5: str | None
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class SplitParams(_Section):
    section = "split"
    test: float
    val: float
    seed: int


@dataclass(frozen=True)
class FeaturesParams(_Section):
    section = "features"
    backbone: str
    backend: str
    weights: str | None
    image_size: int
    batch_size: int


@dataclass(frozen=True)
class TrainParams(_Section):
    section = "train"
    head: str
    epochs: int
    batch_size: int
    learning_rate: float
    hidden_units: int
    dropout: float
    logistic_c: float
    seed: int


@dataclass(frozen=True)
class Params:
    data: DataParams
    split: SplitParams
    features: FeaturesParams
    train: TrainParams


# Each checker returns the cleaned value or raises ValueError saying what is allowed.
def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _md5(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("must be a 32-character hex md5, or null to skip the check")
    return text


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of folder names, e.g. [BACKGROUND_Google], or []")
    return tuple(value)


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError("must be a number strictly between 0 and 1")
    return float(value)


def _dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError("must be a number in [0, 1)")
    return float(value)


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError("must be a positive finite number")
    return float(value)


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def check(value: Any) -> int:
        too_big = maximum is not None and isinstance(value, int) and value > maximum
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
            raise ValueError(f"must be {allowed}")
        return value

    return check


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return value

    return check


def _weights(value: Any) -> str | None:
    if value is None or value == "imagenet":
        return value
    if not isinstance(value, str):
        raise ValueError("must be imagenet, null (random init) or the path of a weights file")
    if not Path(value).is_file():
        raise ValueError("is not an existing file (use imagenet, null, or the path of a weights file)")
    return value


# NumPy (scikit-learn's split, Keras' seeding) takes seeds in [0, 2**32 - 1] only.
SEED = _integer(0, 2**32 - 1)

SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "data": {"url": _text, "md5": _md5, "exclude": _names},
    "split": {"test": _fraction, "val": _fraction, "seed": SEED},
    "features": {
        "backbone": _choice(BACKBONES),
        "backend": _choice(BACKENDS),
        "weights": _weights,
        "image_size": _integer(32),
        "batch_size": _integer(1),
    },
    "train": {
        "head": _choice(HEADS),
        "epochs": _integer(1),
        "batch_size": _integer(1),
        "learning_rate": _positive_number,
        "hidden_units": _integer(1),
        "dropout": _dropout,
        "logistic_c": _positive_number,
        "seed": SEED,
    },
}
SECTIONS = {"data": DataParams, "split": SplitParams, "features": FeaturesParams, "train": TrainParams}


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in known], n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {key}{hint}"


def validate(raw: Any, source: str = "params.yaml") -> Params:
    """Check a parsed params mapping against SCHEMA; raise StageError listing every problem."""
    if not isinstance(raw, dict):
        raise StageError(f"{source}: expected a mapping with sections {', '.join(SCHEMA)}")
    problems = [_unknown(str(key), list(SCHEMA)) for key in raw if key not in SCHEMA]
    sections = {}
    for section, checks in SCHEMA.items():
        values = raw.get(section)
        if not isinstance(values, dict):
            problems.append(f"missing section {section}: (keys {', '.join(checks)})")
            continue
        known = [f"{section}.{k}" for k in checks]
        problems += [_unknown(f"{section}.{key}", known) for key in values if key not in checks]
        cleaned = {}
        for key, check in checks.items():
            if key not in values:
                problems.append(f"missing key {section}.{key}")
                continue
            try:
                cleaned[key] = check(values[key])
            except ValueError as error:
                problems.append(f"{section}.{key} {error}, got {values[key]!r}")
        sections[section] = cleaned
    if problems:
        raise StageError(f"{source}: " + "; ".join(problems))
    return Params(**{name: cls(**sections[name]) for name, cls in SECTIONS.items()})


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path} not found: run stages from the repository root") from None
    except yaml.YAMLError as error:
        raise StageError(f"{path} is not valid YAML: {error}") from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate the params file (stages run from the repository root, as DVC runs them)."""
    global _loaded
    path = Path(path)
    raw = _read_yaml(path)
    loaded = validate(raw, str(path))
    _loaded = (path, raw)
    return loaded


def _value(raw: Any, key: str) -> Any:
    section, name = key.split(".")
    values = raw.get(section) if isinstance(raw, dict) else None
    return values.get(name, "<missing>") if isinstance(values, dict) else "<missing>"


def check_unchanged() -> None:
    """Fail if params.yaml now holds other values for the keys this stage read than when it loaded them.

    DVC reads params.yaml into dvc.lock only after the stage's command exits, so an edit made while the stage
    ran would otherwise be recorded beside outputs made with the old values, and `dvc status` would say clean.
    Keys the stage did not read may change freely (the next stage reads them when it starts).
    """
    if _loaded is None:
        return
    path, before = _loaded
    try:
        now = _read_yaml(path)
    except StageError as error:
        raise StageError(f"{path} changed while the stage ran and can no longer be read ({error})") from None
    changed = sorted(key for key in _read if _value(before, key) != _value(now, key))
    if changed:
        details = ", ".join(f"{key} {_value(before, key)!r} -> {_value(now, key)!r}" for key in changed)
        raise StageError(
            f"{path} changed while the stage ran ({details}); its outputs were made with the old values, so "
            "they are not recorded as up to date: run `dvc repro` again"
        )
