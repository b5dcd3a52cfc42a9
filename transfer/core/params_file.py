"""Reading params.yaml as DVC does: UTF-8 YAML in which no key, and no section, appears twice.

PyYAML keeps the last of two equal keys without a word, while DVC refuses the file; a second `train:` block
would otherwise replace the first and be reported as every key of the first one missing. Each repeat is named
with both of its lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from transfer.core.errors import StageError


def repeated_keys(node: yaml.Node | None, prefix: str = "") -> list[str]:
    """`train.epochs (lines 22 and 30)` for each key that a mapping in the composed YAML holds twice."""
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            line = key.start_mark.line + 1
            if name is not None and name in seen:
                found.append(f"{prefix}{name} (lines {seen[name]} and {line})")
            elif name is not None:
                seen[name] = line
            found += repeated_keys(value, f"{prefix}{name}.")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += repeated_keys(item, prefix)
    return found


def read(path: Path) -> Any:
    """The parsed file; StageError when it is missing, not UTF-8, not YAML, or repeats a key."""
    try:
        text = path.read_text(encoding="utf-8")
        repeated = repeated_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        if repeated:
            raise StageError(
                f"{path} sets {'; '.join(repeated)} twice: PyYAML would keep the last silently and DVC refuses "
                "the file; keep one of each"
            )
        return yaml.safe_load(text)
    except FileNotFoundError:
        raise StageError(f"{path} not found: run stages from the repository root") from None
    except UnicodeDecodeError as error:
        raise StageError(
            f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None
    except yaml.YAMLError as error:
        raise StageError(f"{path} is not valid YAML: {error}") from None
