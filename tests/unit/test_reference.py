"""The config's JSON schema and the reference tables are generated from the model and
kept in the repository: they must match the model, and the schema must accept what the
loader accepts and refuse what it refuses."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from include.nightly_ci.config import reference
from include.nightly_ci.config.loader import _Loader
from tests.services import ROOT


def test_generated_files_match_the_model():
    stale = reference.stale()
    assert stale == [], f"stale: {stale}; run `python -m include.nightly_ci schema`"


def load(path) -> dict:
    """A config file as an editor's YAML language server sees it (dates are strings)."""
    return json.loads(json.dumps(yaml.load(path.read_text(), Loader=_Loader), default=str))


@pytest.mark.parametrize("config", ["include/config/nightly_ci.yaml", "dev/local.yaml"])
def test_the_shipped_configs_validate_against_the_schema(config):
    schema = json.loads(reference.SCHEMA_FILE.read_text())
    jsonschema.validate(load(ROOT / config), schema)


def test_the_schema_refuses_what_the_loader_refuses():
    schema = json.loads(reference.SCHEMA_FILE.read_text())
    data = load(ROOT / "include" / "config" / "nightly_ci.yaml")
    data["arches"]["arm64"]["plattform"] = "linux/arm64"  # a typo
    with pytest.raises(jsonschema.ValidationError, match="plattform"):
        jsonschema.validate(data, schema)
    data = load(ROOT / "include" / "config" / "nightly_ci.yaml")
    data["frameworks"]["TensorRT"] = {}  # not a name the task ids allow
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_the_readme_table_names_every_section():
    table = reference.readme_table()
    for key in ("dag", "source", "frameworks.NAME", "arches.NAME", "pools.NAME", "registries.NAME", "notifications"):
        assert f"| `{key}` |" in table
