"""Field descriptions from a model's docstring, so the OpenAPI document says what each means.

The spec and API models document their fields once, Google-style, in their docstring's
``Args:`` or ``Attributes:`` section (``name: text``, continued on deeper-indented lines;
``a, b: text`` for several). ``described`` copies each entry into the field's description,
unless the field has one of its own, and rebuilds the model's schema.
"""

from __future__ import annotations

import inspect
import re
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=type[BaseModel])

_SECTION = re.compile(r"^(Args|Attributes):\s*$")
_ENTRY = re.compile(r"^([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?:\s*(.*)$")


def docstring_fields(doc: str | None) -> dict[str, str]:
    """``{field name: description}`` from the ``Args:`` / ``Attributes:`` sections."""
    lines = inspect.cleandoc(doc or "").splitlines()
    found: dict[str, str] = {}
    names: list[str] = []
    indent: int | None = None
    in_section = False
    for line in lines:
        if _SECTION.match(line):
            in_section, indent, names = True, None, []
            continue
        if not in_section:
            continue
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:  # the section ended
            in_section, names = False, []
            continue
        if indent is None:
            indent = depth
        entry = _ENTRY.match(line.strip()) if depth == indent else None
        if entry:
            names = [n.strip() for n in entry.group(1).split(",")]
            for name in names:
                found[name] = entry.group(2).strip()
        elif names and depth > indent:
            for name in names:
                found[name] = f"{found[name]} {line.strip()}".strip()
    return {k: " ".join(v.split()) for k, v in found.items() if v}


def described(model: M) -> M:
    """``model`` with its docstring's field entries as descriptions (a class decorator)."""
    docs = docstring_fields(model.__doc__)
    changed = False
    for name, field in model.model_fields.items():
        if field.description is None and name in docs:
            field.description = docs[name]
            changed = True
    if changed:
        model.model_rebuild(force=True)
    return model
