"""Rapport's settings: one typed list, read at start-up, documented from itself.

Every setting has a name, a type, a default and a help text. Values come from,
in increasing priority: the defaults, an optional TOML file (``--config`` or
``RAPPORT_CONFIG``), environment variables ``RAPPORT_<NAME>``, and explicit
overrides (CLI flags). ``docs/configuration.md`` is generated from ``SETTINGS``
(``rapport settings --markdown``) and a test fails when it drifts.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", str, "./data", "Directory for the embedded runtime's SQLite files."),
    Setting(
        "database_url",
        str,
        "",
        "Where state lives: empty for the embedded SQLite files in `data_dir` (or "
        "`sqlite:///DIR` for another directory), `postgresql://...` for PostgreSQL, "
        "`memory://` for a throwaway in-memory store (tests only: nothing is durable).",
    ),
    Setting("database_schema", str, "public", "PostgreSQL schema for Rapport's tables."),
    Setting("host", str, "127.0.0.1", "Address the HTTP server listens on."),
    Setting("port", int, 8000, "Port the HTTP server listens on."),
    Setting(
        "sqlite_synchronous",
        str,
        "FULL",
        "SQLite `synchronous` pragma. FULL survives power loss; NORMAL survives a "
        "process crash only.",
    ),
    Setting("max_event_bytes", int, 32 * 1024, "Largest accepted single event, in bytes."),
    Setting("max_batch_bytes", int, 500 * 1024, "Largest accepted request body, in bytes."),
    Setting("max_batch_events", int, 2500, "Most events accepted in one batch."),
    Setting(
        "max_processing_lag",
        int,
        200_000,
        "Accepted-but-unprocessed events above which ingest answers 429 with Retry-After.",
    ),
    Setting("dedup_window_days", int, 7, "How long a messageId is remembered for dedup."),
    Setting(
        "identifier_traits",
        str,
        "email=email,phone=phone",
        "Traits that are identifiers, as `trait=type` pairs separated by commas, e.g. "
        "`email=email,phone=phone,loyalty_id=loyalty_id`.",
    ),
    Setting(
        "identifier_caps",
        str,
        "user_id=1,email=5,phone=5,anonymous_id=100",
        "Most identifiers of a type one profile may hold, as `type=N` pairs.",
    ),
    Setting("processing_batch_size", int, 500, "Events processed per transaction."),
    Setting(
        "processing",
        str,
        "inline",
        "`inline`: `rapport serve` also processes events into profiles; `off`: it only "
        "ingests, and `rapport worker` processes (for splitting the two across processes).",
    ),
    Setting("log_level", str, "info", "Log level: debug, info, warning, error."),
    Setting("log_format", str, "console", "Log format: `console` or `json`."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    data_dir: str
    database_url: str
    database_schema: str
    host: str
    port: int
    sqlite_synchronous: str
    max_event_bytes: int
    max_batch_bytes: int
    max_batch_events: int
    max_processing_lag: int
    dedup_window_days: int
    identifier_traits: str
    identifier_caps: str
    processing_batch_size: int
    processing: str
    log_level: str
    log_format: str

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_dir(self) -> Path:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return Path(self.data_dir)

    def identifier_trait_map(self) -> dict[str, str]:
        return _pairs("identifier_traits", self.identifier_traits, str)

    def identifier_cap_map(self) -> dict[str, int]:
        return _pairs("identifier_caps", self.identifier_caps, int)


class SettingsError(ValueError):
    """A setting has a value of the wrong shape; the message names it."""


def _pairs(name: str, raw: str, cast: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SettingsError(f"{name}: expected key=value pairs, got {part!r}")
        try:
            out[key.strip()] = cast(value.strip())
        except ValueError as exc:
            raise SettingsError(f"{name}: bad value in {part!r}") from exc
    return out


def _convert(setting: Setting, value: Any, origin: str) -> Any:
    if setting.type is int:
        if isinstance(value, bool):
            raise SettingsError(f"{setting.name} ({origin}): expected an integer")
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(
                f"{setting.name} ({origin}): expected an integer, got {value!r}"
            ) from exc
    if not isinstance(value, str | int | float):
        raise SettingsError(f"{setting.name} ({origin}): expected a string")
    return str(value)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build the settings from defaults, TOML file, environment and overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    path = config_file or env.get("RAPPORT_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {path}: {exc}") from exc
        section = data.get("rapport", data)
        for key, value in section.items():
            if key not in _BY_NAME:
                raise SettingsError(f"config file {path}: unknown setting {key!r}")
            values[key] = _convert(_BY_NAME[key], value, str(path))
    for setting in SETTINGS:
        env_name = f"RAPPORT_{setting.name.upper()}"
        if env_name in env:
            values[setting.name] = _convert(setting, env[env_name], env_name)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _BY_NAME:
            raise SettingsError(f"unknown setting {key!r}")
        values[key] = _convert(_BY_NAME[key], value, "override")
    settings = Settings(**values)
    # Validate the structured ones early so a typo fails at start-up.
    settings.identifier_trait_map()
    settings.identifier_cap_map()
    if settings.processing not in {"inline", "off"}:
        raise SettingsError("processing: expected inline or off")
    if settings.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise SettingsError("sqlite_synchronous: expected OFF, NORMAL, FULL or EXTRA")
    return settings


def settings_markdown() -> str:
    """The configuration reference, generated from ``SETTINGS``."""
    lines = [
        "# Configuration",
        "",
        "Generated from `rapport.settings.SETTINGS` by `rapport settings --markdown`;",
        "a test fails when this page and the code disagree.",
        "",
        "Each setting can be given as an environment variable `RAPPORT_<NAME>`, in a",
        "TOML file (`--config FILE` or `RAPPORT_CONFIG`, keys at top level or under",
        "`[rapport]`), or for some of them as a command-line flag. Flags beat the",
        "environment, which beats the file, which beats the default.",
        "",
        "| Setting | Environment variable | Type | Default | Meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default != "" else "(empty)"
        env = f"RAPPORT_{s.name.upper()}"
        lines.append(f"| `{s.name}` | `{env}` | {s.type.__name__} | {default} | {s.help} |")
    return "\n".join(lines) + "\n"


assert {f.name for f in fields(Settings)} == set(_BY_NAME), "Settings and SETTINGS differ"
