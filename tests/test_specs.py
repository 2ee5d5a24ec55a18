"""/specs: the shipped configs as presets, and YAML read safely for the start form."""

from __future__ import annotations

from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from test_api import assert_problem

from searchspec.spec import parse_search_spec
from service.specs import MAX_YAML_CHARS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_the_presets_are_the_shipped_configs_text_and_mapping(api: TestClient) -> None:
    items = api.get("/specs/presets").json()["items"]
    assert [p["name"] for p in items] == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    for preset in items:
        text = (CONFIGS / f"{preset['name']}.yaml").read_text()
        assert preset["yaml"] == text and preset["spec"] == (yaml.safe_load(text) or {})
        parse_search_spec(preset["spec"])  # each one a valid search
        assert preset["description"] and not preset["description"].startswith("#")


def test_yaml_becomes_the_mapping_post_searches_takes(api: TestClient) -> None:
    text = "name: from-yaml\nepochs: 2\nspace: {layers: 3, channels: 8}\n"
    body = api.post("/specs/parse", json={"yaml": text}).json()
    assert body == {
        "spec": {"name": "from-yaml", "epochs": 2, "space": {"layers": 3, "channels": 8}}
    }
    assert api.post("/specs/parse", json={"yaml": ""}).json() == {"spec": {}}


def test_yaml_that_is_not_a_plain_mapping_is_a_422_in_one_line(api: TestClient) -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"  # aliases: a small text, a big tree
    for text, words in [
        ("epochs: [1, 2", ("yaml", "line")),
        ("- 1\n- 2\n", ("yaml", "mapping")),
        ("just a string", ("yaml", "mapping")),
        (bomb, ("yaml", "aliases")),
        ("x: !!python/object:os.system ls", ("yaml",)),
    ]:
        response = api.post("/specs/parse", json={"yaml": text})
        assert_problem(response, 422, *words)
        assert "\n" not in response.json()["detail"]
    too_long = api.post("/specs/parse", json={"yaml": "#" * (MAX_YAML_CHARS + 1)})
    assert too_long.status_code in (413, 422)  # over the body limit or the field's


def test_specs_need_a_token_where_accounts_are_on(api: TestClient) -> None:
    for method, url in [("GET", "/specs/presets"), ("POST", "/specs/parse")]:
        response = api.request(
            method, url, json={"yaml": "a: 1"}, headers={"Authorization": "Bearer nope"}
        )
        assert response.status_code == 401, (url, response.text)
