"""The ``/specs`` resource: what the start form offers before anything is submitted.

- ``GET /specs/presets``: the configs shipped in ``configs/*.yaml``, as text and as parsed
  mappings, so the page's form can start from one;
- ``POST /specs/parse``: a YAML text (what a user copies from a config file) as the mapping
  ``POST /searches`` takes, parsed safely: plain YAML only (no tags beyond the safe ones, no
  aliases, whose expansion could make a small text a huge body), a mapping at the top.

Neither stores anything; ``POST /searches`` still validates the spec itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from service.auth import UNAUTHORIZED, CurrentUser
from service.blocking import blocking
from service.schemas import CROSS_SITE, VALIDATION_ERROR, Problem

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
"""The repository's configs (a checkout and the Docker image hold them; a wheel does not)."""
MAX_YAML_CHARS = 64 * 1024
MAX_PRESETS = 50

router = APIRouter(prefix="/specs", tags=["specs"], responses={**VALIDATION_ERROR, **UNAUTHORIZED})


class Preset(BaseModel):
    name: str = Field(description="the file's stem: `shapes` for `configs/shapes.yaml`")
    description: str = Field(description="the file's first comment line")
    yaml: str = Field(description="the file as written")
    spec: dict[str, Any] = Field(description="the file parsed: a body for `POST /searches`")


class PresetList(BaseModel):
    """The configs this server ships."""

    items: list[Preset] = Field(
        description=f"one per `configs/*.yaml`, by file name (at most {MAX_PRESETS}); empty "
        "when the server has no configs folder"
    )


class YamlText(BaseModel):
    yaml: str = Field(max_length=MAX_YAML_CHARS, description="a search spec written in YAML")


class ParsedSpec(BaseModel):
    spec: dict[str, Any] = Field(description="the mapping the YAML holds (not yet validated)")


class _PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in a spec", mark
            )
        return super().compose_node(parent, index)


def parse_yaml_spec(text: str) -> dict[str, Any]:
    """The mapping ``text`` holds.

    Raises:
        ValueError: not YAML (the message has the line and column), an alias, or not a
            mapping at the top.
    """
    try:
        data = yaml.load(text, Loader=_PlainLoader)  # a SafeLoader, without aliases
    except yaml.YAMLError as e:
        raise ValueError(f"yaml: not a spec in YAML: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError("yaml: a spec is a mapping of settings, like configs/shapes.yaml")
    return data


def read_presets(folder: Path = CONFIGS_DIR) -> list[Preset]:
    presets = []
    for path in sorted(folder.glob("*.yaml"), key=lambda p: p.stem)[:MAX_PRESETS]:  # by name
        text = path.read_text(encoding="utf-8")
        comment = next((ln for ln in text.splitlines() if ln.startswith("#")), "#")
        presets.append(
            Preset(
                name=path.stem,
                description=comment.lstrip("#").strip(),
                yaml=text,
                spec=parse_yaml_spec(text),
            )
        )
    return presets


@router.get("/presets", response_model=PresetList)
async def list_presets(request: Request, user: CurrentUser) -> PresetList:
    """The configs this server ships (``configs/*.yaml``), for the start form."""
    return PresetList(items=await blocking(request, read_presets))


@router.post(
    "/parse",
    response_model=ParsedSpec,
    responses={**CROSS_SITE, 422: {"model": Problem, "description": "not a YAML mapping"}},
)
async def parse_spec(body: YamlText, user: CurrentUser) -> ParsedSpec:
    """A spec written in YAML as the JSON mapping ``POST /searches`` takes (safe YAML only)."""
    try:
        return ParsedSpec(spec=parse_yaml_spec(body.yaml))
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
