"""The configuration reference of the README, generated from the schema.

`python -m atlas.config.reference` prints a Markdown table of every key (dotted path, type, default,
the comment written beside its declaration in `schema.py`). The README holds this table between
two markers and a test checks that it is current, so the documentation cannot drift.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import typing
from typing import Any

from atlas.config import schema

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment on the field's line (or the line above)."""
    source = inspect.getsource(schema)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[tuple[str, str], str] = {}
    lines = source.splitlines()
    for name, cls in inspect.getmembers(schema, dataclasses.is_dataclass):
        start = inspect.getsourcelines(cls)[1]
        for offset, line in enumerate(inspect.getsourcelines(cls)[0]):
            stripped = line.strip()
            field_name = stripped.split(":")[0]
            if ":" not in stripped or not field_name.isidentifier():
                continue
            lineno = start + offset
            above: list[str] = []
            prev = lineno - 1
            while prev in comments and lines[prev - 1].strip().startswith("#"):
                above.insert(0, comments[prev])
                prev -= 1
            out[(name, field_name)] = comments.get(lineno) or " ".join(above)
    return out


def _type_str(tp: Any) -> str:
    text = str(tp).replace("typing.", "").replace("atlas.config.schema.", "")
    return getattr(tp, "__name__", None) if isinstance(tp, type) else text


def rows(cls: type = schema.AtlasConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every leaf of the tree."""
    comments = _field_comments()
    hints = typing.get_type_hints(cls)
    instance = cls()
    out: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        tp, value = hints[f.name], getattr(instance, f.name)
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(tp):
            out += rows(tp, f"{prefix}{f.name}.")
            continue
        if inner:  # an optional section such as data.synthetic
            note = comments.get((cls.__name__, f.name), "")
            out.append((f"{prefix}{f.name}", "section or null", repr(value), note))
            out += rows(inner[0], f"{prefix}{f.name}.")
            continue
        desc = comments.get((cls.__name__, f.name), "")
        out.append((f"{prefix}{f.name}", _type_str(tp), _default_str(value), desc))
    return out


def _default_str(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def markdown() -> str:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tp, default, desc in rows():
        tp, desc = tp.replace("|", r"\|"), desc.replace("|", r"\|")
        lines.append(f"| `{key}` | {tp} | `{default}` | {desc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(f"{BEGIN}\n{markdown()}\n{END}\n")
