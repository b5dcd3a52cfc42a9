"""docs/params.md's table, generated from the declarations in transfer/core/params.py:

python -m tools.params_doc     (from the repository root; tests/test_params.py checks it is current)
"""

from __future__ import annotations

from pathlib import Path

import yaml

from transfer.core import params_file
from transfer.core.params import SECTIONS


def markdown_table(defaults: dict) -> str:
    """docs/params.md's table: every key's default (from a parsed params.yaml) and meaning (from its declaration)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for name, section in SECTIONS.items():
        for key, field in section.model_fields.items():
            choices = getattr(field.annotation, "__args__", ())
            meaning = field.description or ""
            if choices and all(isinstance(c, str) for c in choices) and "one of" not in meaning:
                meaning += f": {', '.join(f'`{c}`' for c in choices)}"
            default = yaml.safe_dump(defaults[name][key], default_flow_style=True).strip().removesuffix("\n...")
            lines.append(f"| `{name}.{key}` | `{default}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(params_file.read(Path("params.yaml"))), end="")
