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
    # Every property of every schema, but the data sets' `kind` discriminators.
    bare = [
        f"{model}.{name}"
        for model, schema in schemas.items()
        for name, p in (schema.get("properties") or {}).items()
        if not p.get("description") and name != "kind"
    ]
    assert not bare, bare
