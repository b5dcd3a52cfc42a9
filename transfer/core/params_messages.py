"""The words of params.yaml's error messages, derived from the declarations in transfer/core/params.py: an unknown
key with the nearest known one, what a field accepts (its choices or bounds), a value as shown (data.url without
its secrets)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from transfer.core.redact import redact


def unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in known], n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {key}{hint}"


def shown(key: str, value: Any) -> str:
    """A value for a message: data.url without its secrets (user:password@, ?token=...)."""
    return repr(redact(value) if key == "data.url" and isinstance(value, str) else value)


def allowed(section, name: str) -> str:
    """What a field accepts, in words, from its declaration: the choices of a Literal, the bounds of a number,
    else its description."""
    field = section.model_fields[name]
    choices = getattr(field.annotation, "__args__", ())
    if choices and all(isinstance(c, str) for c in choices):
        return "one of: " + ", ".join(choices)
    if field.annotation not in (int, float):
        return field.description or ""
    bound = {key: getattr(m, key) for m in field.metadata for key in ("gt", "ge", "lt", "le") if hasattr(m, key)}
    if field.annotation is int:
        upper = f" and <= {bound['le']}" if "le" in bound else ""
        return f"an integer >= {bound.get('ge', 0)}{upper}"
    if "gt" in bound and "lt" in bound:
        return f"a number strictly between {bound['gt']} and {bound['lt']}"
    if "ge" in bound and "lt" in bound:
        return f"a number in [{bound['ge']}, {bound['lt']})"
    if "gt" in bound and "le" in bound:
        return f"a number in ({bound['gt']}, {bound['le']}]"
    return "a positive finite number"


def problems(section, values: dict, error: ValidationError) -> list[str]:
    """One line per problem pydantic found in a section's values (section: a params.Section class)."""
    found: list[str] = []
    for item in error.errors():
        key = str(item["loc"][0])
        full = f"{section.section}.{key}"
        if item["type"] == "extra_forbidden":
            found.append(unknown(full, [f"{section.section}.{k}" for k in section.model_fields]))
        elif item["type"] == "missing":
            found.append(f"missing key {full}")
        elif item["type"] == "value_error":  # our own validators say what is allowed
            found.append(f"{full} {str(item['ctx']['error'])}, got {shown(full, values[key])}")
        elif not any(p.startswith(f"{full} ") for p in found):  # one line per key (a union reports each arm)
            found.append(f"{full} must be {allowed(section, key)}, got {shown(full, values[key])}")
    return found
