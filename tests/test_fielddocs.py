"""The OpenAPI document describes the fields, from the models' docstrings."""

from __future__ import annotations

from fastapi.testclient import TestClient

from supernet.fielddocs import docstring_fields


def test_docstring_entries_become_field_descriptions() -> None:
    doc = """Something.

    Args:
        lr: the learning rate,
            annealed by a cosine.
        a, b: both of them.
        c (int): typed, Google-style.

    Returns:
        x: not a field.
    """
    assert docstring_fields(doc) == {
        "lr": "the learning rate, annealed by a cosine.",
        "a": "both of them.",
        "b": "both of them.",
        "c": "typed, Google-style.",
    }


def test_the_search_and_its_spec_are_described_in_the_openapi_document(api: TestClient) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    for model in ("SearchSpec", "SpaceSpec", "SharedSpec", "ReinforceConfig", "ShapesSpec",
                  "SearchOut", "ArchitectureOut", "Progress"):  # fmt: skip
        props = schemas[model]["properties"]
        bare = [name for name, p in props.items() if not p.get("description") and name != "kind"]
        assert not bare, (model, bare)
    total = [p for s in schemas.values() for p in (s.get("properties") or {}).values()]
    described = [p for p in total if p.get("description")]
    assert len(described) / len(total) > 0.6, (len(described), len(total))
