"""What predict prints: paths as valid UTF-8, which model it used, and the --json document written as results come."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transfer.artifacts.classifier import KINDS


def printable(path: str) -> str:
    """A path as valid UTF-8 text: a byte of a name that is not UTF-8 is written as `\\xNN` (Python's
    backslashreplace), where printing it as it is would put raw bytes in a JSON document, or fail."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def which(model, model_path: Path) -> dict:
    """The model predict uses, and which of the pipeline's it is (export names it: transfer/artifacts/classifier.py)."""
    name = str(getattr(model, "name", ""))
    return {"path": str(model_path), "kind": KINDS.get(name, f"a classifier named {name!r}")}


class JsonDocument:
    """One JSON document written as results come: {"model": {"path", "kind"}, "results": {...}, "errors": {...}}, with
    "error" when nothing could be classified (no model: then no "model" either)."""

    def __init__(self):
        self.results, self.errors, self.started = 0, {}, False
        print("{", end="")

    def start(self, model: dict | None) -> None:
        if model is not None:
            print(f'"model": {json.dumps(model, ensure_ascii=False)}, ', end="")
        print('"results": {', end="")
        self.started = True

    def result(self, path: str, ranked: list[tuple[str, float]]) -> None:
        entries = [{"label": label, "probability": round(p, 6)} for label, p in ranked]
        print(("," if self.results else "") + f"\n  {json.dumps(path, ensure_ascii=False)}: ", end="")
        print(json.dumps(entries, ensure_ascii=False), end="", flush=True)
        self.results += 1

    def close(self, fatal: str | None = None) -> None:
        if not self.started:
            self.start(None)
        tail = {"errors": self.errors, **({"error": fatal} if fatal is not None else {})}
        print(("\n" if self.results else "") + "}," + json.dumps(tail, indent=2, ensure_ascii=False)[1:], flush=True)
