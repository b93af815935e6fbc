from __future__ import annotations

from pathlib import Path

import pytest

from rapport.settings import SETTINGS, SettingsError, load_settings, settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_embedded_sqlite() -> None:
    settings = load_settings(environ={})
    assert not settings.is_postgres
    assert settings.sqlite_dir == Path("./data")
    assert settings.max_batch_events == 2500


def test_priority_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "rapport.toml"
    config.write_text('[rapport]\nport = 9000\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    settings = load_settings(
        {"host": "10.0.0.1"},
        environ={"RAPPORT_PORT": "9100"},
        config_file=config,
    )
    assert settings.port == 9100  # env beats file
    assert settings.host == "10.0.0.1"  # override beats everything
    assert settings.log_level == "debug"  # file beats default


def test_postgres_url_selects_postgres() -> None:
    settings = load_settings(environ={"RAPPORT_DATABASE_URL": "postgresql://u@h/db"})
    assert settings.is_postgres


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"RAPPORT_PORT": "eighty"}, "port"),
        ({"RAPPORT_IDENTIFIER_CAPS": "email"}, "identifier_caps"),
        ({"RAPPORT_IDENTIFIER_CAPS": "email=many"}, "identifier_caps"),
        ({"RAPPORT_SQLITE_SYNCHRONOUS": "sometimes"}, "sqlite_synchronous"),
        ({"RAPPORT_PROFILE_CACHE_SIZE": "-1"}, "profile_cache_size"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(environ=environ)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "rapport.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(environ={}, config_file=config)


def test_identifier_maps() -> None:
    settings = load_settings(
        environ={"RAPPORT_IDENTIFIER_TRAITS": "email=email, loyalty_id=loyalty_id"}
    )
    assert settings.identifier_trait_map() == {"email": "email", "loyalty_id": "loyalty_id"}


def test_configuration_doc_is_generated_from_settings() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == settings_markdown(), "run `make docs` to regenerate docs/configuration.md"
    for setting in SETTINGS:
        assert f"RAPPORT_{setting.name.upper()}" in doc
