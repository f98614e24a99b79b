"""``[tool.flwr.app]`` in pyproject.toml is generated from ExperimentConfig and cannot drift."""

import tomllib

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from acp_flower.apps import pyproject_section
from acp_flower.config import ExperimentConfig


def _app_table(path=pyproject_section.PYPROJECT) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)["tool"]["flwr"]["app"]


def test_run_config_equals_experiment_config_exactly():
    # Same keys, same defaults, same TOML types (flwr run rejects keys not listed here)
    config = _app_table()["config"]
    expected = ExperimentConfig().to_run_config()
    assert config == expected
    assert {k: type(v) for k, v in config.items()} == {k: type(v) for k, v in expected.items()}
    assert ExperimentConfig.from_run_config(config) == ExperimentConfig()


def test_section_is_up_to_date():
    assert not pyproject_section.sync_pyproject(check=True), \
        "run: python -m acp_flower.apps.pyproject_section"


def test_components_are_the_apps():
    from importlib import import_module

    components = _app_table()["components"]
    apps = {name: getattr(import_module(ref.split(":")[0]), ref.split(":")[1]) for name, ref in components.items()}
    assert isinstance(apps["serverapp"], ServerApp) and isinstance(apps["clientapp"], ClientApp)


def test_regeneration_keeps_the_rest_of_the_file(tmp_path):
    # Prepare: a pyproject with other content and a stale generated section
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n\n' + pyproject_section.MARKER + '\n[tool.flwr.app]\npublisher = "old"\n')
    # Execute
    changed = pyproject_section.sync_pyproject(path)
    # Assert
    assert changed and path.read_text().startswith('[project]\nname = "x"\n\n' + pyproject_section.MARKER)
    assert _app_table(path)["config"] == ExperimentConfig().to_run_config()
    assert not pyproject_section.sync_pyproject(path, check=True)
