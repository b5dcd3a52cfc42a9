"""Reading params.yaml as DVC does: UTF-8, parsed by ruamel.yaml's safe loader (YAML 1.2, DVC's own reader), which
refuses a key or a section set twice.

PyYAML would keep the last of two equal keys without a word, so a second `train:` block would replace the first;
ruamel refuses the file, as DVC does, and the message names the key by its path with both of its lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from transfer.core.errors import StageError


def _named(node: Node | None, at: tuple[int, int], prefix: str = "") -> str | None:
    """`train.epochs (lines 22 and 30)` for the key found at `at` (line, column: where ruamel saw it repeated), with
    the line of its first use in the same mapping; None when no key is there."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if (key.start_mark.line, key.start_mark.column) == at:
                first = next(k for k, _ in node.value if k.value == key.value)
                return f"{prefix}{key.value} (lines {first.start_mark.line + 1} and {at[0] + 1})"
            if found := _named(value, at, f"{prefix}{key.value}."):
                return found
    elif isinstance(node, SequenceNode):
        for item in node.value:
            if found := _named(item, at, prefix):
                return found
    return None


def read(path: Path) -> Any:
    """The parsed file; StageError when it is missing, not UTF-8, not YAML, or repeats a key."""
    try:
        text = path.read_text(encoding="utf-8")
        return YAML(typ="safe").load(text)
    except FileNotFoundError:
        raise StageError(f"{path} not found: run stages from the repository root") from None
    except UnicodeDecodeError as error:
        raise StageError(
            f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None
    except DuplicateKeyError as error:
        mark = error.problem_mark
        repeated = _named(YAML(typ="safe").compose(text), (mark.line, mark.column)) or f"a key (line {mark.line + 1})"
        raise StageError(f"{path} sets {repeated} twice, which DVC refuses; keep one of each") from None
    except YAMLError as error:
        raise StageError(f"{path} is not valid YAML: {error}") from None
