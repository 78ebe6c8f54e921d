"""plugins/.airflowignore keeps the plain modules away from Airflow's plugins manager,
which would execute each of them again in every task process."""

from __future__ import annotations

from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_every_plugins_module_is_an_airflow_plugin_or_ignored():
    ignored = {line.strip() for line in (PLUGINS / ".airflowignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for module in PLUGINS.glob("*.py"):
        is_plugin = "(AirflowPlugin)" in module.read_text()
        assert is_plugin != (module.name in ignored), f"{module.name}: plugin={is_plugin}, ignored={not is_plugin}"


def test_the_plugins_manager_loads_only_the_plugin():
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(str(PLUGINS))
    assert errors == {} and [type(p).__name__ for p in plugins] == ["MlpipePriorityPlugin"]
