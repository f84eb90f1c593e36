"""The JSON schema editors use to complete and check params files."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from iocane.base.config_schema import SCHEMA_FILES, params_json_schema, params_schema_text
from tests.helpers.paths import PROJECT_ROOT


@pytest.mark.parametrize(("name", "overlay"), SCHEMA_FILES.items())
def test_the_committed_schema_is_the_generated_one(name: str, overlay: bool) -> None:
    committed = (PROJECT_ROOT / name).read_text()
    assert committed == params_schema_text(overlay), (
        f"{name} is stale: regenerate it with "
        "python -c 'from pathlib import Path; "
        "from iocane.base.config_schema import write_params_schemas; "
        "write_params_schemas(Path.cwd())'"
    )


def test_params_yaml_names_its_schema_and_satisfies_it() -> None:
    text = (PROJECT_ROOT / "params.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=params.schema.json"
    jsonschema.validate(yaml.safe_load(text), params_json_schema())


def test_the_overlays_satisfy_the_overlay_schema_and_not_the_full_one() -> None:
    for path in sorted((PROJECT_ROOT / "configs").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        jsonschema.validate(document, params_json_schema(overlay=True))
        with pytest.raises(jsonschema.ValidationError):  # keys are missing: it is an overlay
            jsonschema.validate(document, params_json_schema())


def test_the_schema_refuses_what_the_loader_refuses(params_document: dict) -> None:
    params_document["train"]["epsilon"] = 0.1
    with pytest.raises(jsonschema.ValidationError, match="epsilon"):
        jsonschema.validate(params_document, params_json_schema())
    del params_document["train"]["epsilon"]
    params_document["train"]["eps"] = "0.1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(params_document, params_json_schema())
