"""Settings: one name per setting, env over config file over default, and clear errors for bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gofannon.settings import Settings, parse_bool, settings_table


def test_defaults_are_the_embedded_setup() -> None:
    s = Settings.load({})
    assert s.app_env == "local" and s.storage == "sqlite" and s.redis_url is None
    assert s.data_dir == "./data" and s.port == 8000 and s.max_body_bytes == 10 * 1024 * 1024
    assert s.is_dev and s.self_service_budget_on


def test_a_yaml_config_file_sets_values_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "gofannon.yaml").write_text("GOFANNON_PORT: 9100\nGOFANNON_STORAGE: memory\nFRONTEND_URL: http://ui.example\n")
    s = Settings.load({"GOFANNON_CONFIG_DIR": str(tmp_path), "GOFANNON_PORT": "9200"})
    assert s.port == 9200  # env over file
    assert s.storage == "memory" and s.frontend_url == "http://ui.example"  # file over default


def test_a_toml_config_file_named_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "prod.toml"
    path.write_text('APP_ENV = "production"\nGOFANNON_STRICT_PLUGINS = true\nGOFANNON_DISABLE_PLUGINS = ["openai", "gemini"]\n')
    s = Settings.load({"GOFANNON_CONFIG_FILE": str(path)})
    assert s.app_env == "production" and not s.is_dev and not s.self_service_budget_on
    assert s.strict_plugins is True and s.disable_plugins == ["openai", "gemini"]


def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GOFANNON_CONFIG_FILE"):
        Settings.load({"GOFANNON_CONFIG_FILE": str(tmp_path / "missing.yaml")})


def test_a_config_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "gofannon.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        Settings.load({"GOFANNON_CONFIG_DIR": str(tmp_path)})


@pytest.mark.parametrize("raw,value", [("1", True), ("true", True), ("YES", True), ("on", True),
                                       ("0", False), ("false", False), ("No", False), ("off", False), ("", False)])
def test_booleans_accept_the_documented_spellings(raw: str, value: bool) -> None:
    assert parse_bool(raw) is value
    assert Settings.load({"GOFANNON_TRACE_PLUGINS": raw}).trace_plugins is value


def test_an_unset_tri_state_boolean_follows_app_env() -> None:
    assert Settings.load({"APP_ENV": "production"}).self_service_budget_on is False
    assert Settings.load({"APP_ENV": "production", "GOFANNON_SELF_SERVICE_BUDGET": "on"}).self_service_budget_on


@pytest.mark.parametrize("env,needle", [
    ({"GOFANNON_STRICT_PLUGINS": "maybe"}, "GOFANNON_STRICT_PLUGINS: not a boolean: 'maybe'"),
    ({"GOFANNON_PORT": "eighty"}, "GOFANNON_PORT"),
    ({"GOFANNON_MAX_BODY_BYTES": "10MB"}, "GOFANNON_MAX_BODY_BYTES"),
    ({"GOFANNON_SANDBOX_TIMEOUT_S": "soon"}, "GOFANNON_SANDBOX_TIMEOUT_S"),
])
def test_a_bad_value_names_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        Settings.load(env)
    assert needle in str(info.value)


def test_lists_are_comma_separated() -> None:
    s = Settings.load({"GOFANNON_LOAD_PLUGINS": " sqlite, memory ,,", "GOFANNON_DISABLE_PLUGINS": ""})
    assert s.load_plugins == ["sqlite", "memory"] and s.disable_plugins == []
    assert Settings.load({}).load_plugins is None  # unset = every installed plugin


def test_provider_key_variables_are_read_from_the_environment() -> None:
    s = Settings.load({"OPENAI_API_KEY": "sk-test", "EMPTY": ""})
    assert s.env("OPENAI_API_KEY") == "sk-test"
    assert s.env("EMPTY") is None and s.env("MISSING", "d") == "d"


def test_every_setting_has_a_unique_name_and_appears_in_the_table() -> None:
    table = settings_table()
    names = [line.split("`")[1] for line in table.splitlines()[2:]]
    assert len(names) == len(set(names))
    for name in ("APP_ENV", "GOFANNON_DATA_DIR", "FRONTEND_URL", "REDIS_URL", "AUTH_CONFIG_PATH",
                 "GOFANNON_STORAGE", "GOFANNON_MAX_BODY_BYTES", "GOFANNON_REDIS_PREFIX"):
        assert name in names


def test_gofannon_serve_with_a_bad_value_exits_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "GOFANNON_PORT": "eighty", "GOFANNON_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "gofannon", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "bad configuration" in out.stderr and "GOFANNON_PORT" in out.stderr
    assert "Traceback" not in out.stderr
