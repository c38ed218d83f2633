"""Settings: env and TOML, env wins, and every invalid value is one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import SettingsError, load_settings


def test_defaults_match_the_documented_ports_and_places() -> None:
    s = load_settings({})
    assert (s.grpc_port, s.http_port, s.web_port, s.data_dir) == (50051, 8000, 8080, ".lumina")
    assert s.database_url is None and s.backend_target == "127.0.0.1:50051"


def test_environment_overrides_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "lumina.toml"
    config.write_text('grpc_port = 6000\nhttp_port = 7000\nlog_level = "debug"\n')
    s = load_settings({"LUMINA_CONFIG": str(config), "LUMINA_HTTP_PORT": "7100", "OPENAI_API_KEY": "sk-x"})
    assert (s.grpc_port, s.http_port, s.log_level, s.openai_api_key) == (6000, 7100, "debug", "sk-x")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LUMINA_GRPC_PORT": "abc"}, "LUMINA_GRPC_PORT: expected an integer"),
        ({"LUMINA_WEB_PORT": "0"}, "LUMINA_WEB_PORT: expected a TCP port from 1 to 65535, got 0"),
        ({"LUMINA_LOG_LEVEL": "loud"}, "LUMINA_LOG_LEVEL: expected one of debug, info, warning, error"),
        ({"LUMINA_DATABASE_URL": "mysql://x"}, "LUMINA_DATABASE_URL: expected a postgresql:// URL"),
        ({"LUMINA_TENANT_ID": "Bad Tenant"}, "LUMINA_TENANT_ID: expected lower-case letters"),
        ({"LUMINA_GRPC_PROT": "1"}, "LUMINA_GRPC_PROT: unknown setting"),
        ({"LUMINA_BACKEND_PROCESSES": "0"}, "LUMINA_BACKEND_PROCESSES: expected 1 to 64 processes"),
        ({"LUMINA_USAGE_COMMIT": "lazy"}, "LUMINA_USAGE_COMMIT: expected one of durable, fast"),
        ({"LUMINA_CONFIG": "/nonexistent/lumina.toml"}, "LUMINA_CONFIG: file /nonexistent/lumina.toml does not exist"),
    ],
)
def test_invalid_values_name_the_setting_and_the_expected_form(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_unknown_or_malformed_toml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("grpc_port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({"LUMINA_CONFIG": str(bad)})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("grpcport = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'grpcport'"):
        load_settings({"LUMINA_CONFIG": str(unknown)})
