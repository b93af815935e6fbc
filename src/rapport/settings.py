"""Rapport's settings: one typed list, read at start-up, documented from itself.

Every setting has a name, a type, a default and a help text. Values come from,
in increasing priority: the defaults, an optional TOML file (``--config`` or
``RAPPORT_CONFIG``), environment variables ``RAPPORT_<NAME>``, and explicit
overrides (CLI flags). ``docs/configuration.md`` is generated from ``SETTINGS``
(``rapport settings --markdown``) and a test fails when it drifts.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rapport.core.consent_gate import ConsentRules, check_rules
from rapport.runtime.sender_limits import SenderConfig


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
    Setting(
        "processing_batch_size",
        int,
        2000,
        "Most events processed per transaction: a step takes what is waiting, up to this.",
    ),
    Setting(
        "profile_cache_size",
        int,
        10_000,
        "Profiles the processor keeps in memory after committing them, the most recently "
        "processed first (0: none). Spares reading and decoding a returning customer's "
        "profile; costs memory, about twice each profile's stored size.",
    ),
    Setting(
        "processing",
        str,
        "inline",
        "`inline`: `rapport serve` also processes events into profiles; `off`: it only "
        "ingests, and `rapport worker` processes (for splitting the two across processes).",
    ),
    Setting("log_level", str, "info", "Log level: debug, info, warning, error."),
    Setting("log_format", str, "console", "Log format: `console` or `json`."),
    Setting(
        "public_url",
        str,
        "http://127.0.0.1:8000",
        "Base URL customers reach Rapport at: unsubscribe, preference, open-pixel and "
        "click links in messages point here.",
    ),
    Setting(
        "link_secret",
        str,
        "",
        "Secret that signs unsubscribe, open and click links (HMAC-SHA256). Empty: one "
        "is generated and kept in the data directory (`link_secret` file).",
    ),
    Setting("smtp_host", str, "", "SMTP server for email; empty disables the email channel."),
    Setting("smtp_port", int, 587, "SMTP server port."),
    Setting("smtp_username", str, "", "SMTP login (empty: no AUTH)."),
    Setting("smtp_password", str, "", "SMTP password."),
    Setting(
        "smtp_tls",
        str,
        "starttls",
        "`starttls` (upgrade when offered), `tls` (implicit TLS) or `none`.",
    ),
    Setting("email_from", str, "Rapport <rapport@localhost>", "From address of emails."),
    Setting(
        "sms_base_url",
        str,
        "",
        "Base URL of a Twilio-compatible SMS REST API, e.g. `https://api.twilio.com`; "
        "empty disables the SMS channel.",
    ),
    Setting("sms_account_sid", str, "", "Account SID for the SMS API (basic-auth user)."),
    Setting("sms_auth_token", str, "", "Auth token for the SMS API (basic-auth password)."),
    Setting("sms_from", str, "", "Sender number or id of SMS messages."),
    Setting(
        "push_gateway_url",
        str,
        "",
        "URL messages for the push channel are POSTed to as JSON; empty disables push.",
    ),
    Setting("push_gateway_token", str, "", "Bearer token sent to the push gateway."),
    Setting(
        "webhook_secret",
        str,
        "",
        "Secret that signs webhook bodies (HMAC-SHA256 over `timestamp.body`); empty: "
        "webhooks are sent unsigned.",
    ),
    Setting(
        "consent_required_events",
        str,
        "",
        "Track events kept only with a consent in the event's own "
        "`context.consent.categoryPreferences`, as `Event Name=category` pairs, e.g. "
        "`Geofence Entered=location`. Without it the event is refused (`consent_required`) "
        "and stored nowhere.",
    ),
    Setting(
        "consent_required_fields",
        str,
        "",
        "Fields removed from events that do not carry a consent, as `path=category` pairs, "
        "e.g. `context.location=location,context.ip=analytics`.",
    ),
    Setting(
        "sender",
        str,
        "on",
        "`on`: this process delivers pending messages; `off`: it leaves them to another.",
    ),
    Setting(
        "sender_limits",
        str,
        "",
        "Sender limits over their defaults (docs/delivery.md, *Limits*), as `name=value` "
        "pairs: `max_attempts`, `backoff_base`, `backoff_max`, `concurrency`, "
        "`rate_per_second`, `burst`, `breaker_failures`, `breaker_cooldown`, "
        "`send_timeout`, `lease`, `batch_size`, `idle_poll`, `queue`, `saturated_delay` "
        "(seconds where a time), e.g. `rate_per_second=200,burst=200`.",
    ),
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
    profile_cache_size: int
    processing: str
    log_level: str
    log_format: str
    public_url: str
    link_secret: str
    smtp_host: str
    smtp_port: int
    smtp_username: str
    smtp_password: str
    smtp_tls: str
    email_from: str
    sms_base_url: str
    sms_account_sid: str
    sms_auth_token: str
    sms_from: str
    push_gateway_url: str
    push_gateway_token: str
    webhook_secret: str
    consent_required_events: str
    consent_required_fields: str
    sender: str
    sender_limits: str

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

    def sender_config(self) -> SenderConfig:
        """The sender's limits: the defaults with ``sender_limits`` over them."""
        known = {f.name: f.type for f in fields(SenderConfig)}
        values: dict[str, Any] = {}
        for name, raw in _pairs("sender_limits", self.sender_limits, str).items():
            if name not in known:
                raise SettingsError(f"sender_limits: unknown limit {name!r}")
            cast = int if known[name] in (int, "int") else float
            try:
                values[name] = cast(raw)
                if not math.isfinite(values[name]) or values[name] <= 0:
                    raise ValueError(raw)
            except ValueError:
                raise SettingsError(
                    f"sender_limits: {name} expects a positive "
                    f"{'integer' if cast is int else 'number'}, got {raw!r}"
                ) from None
        try:
            return SenderConfig(**values)
        except ValueError as exc:
            raise SettingsError(f"sender_limits: {exc}") from None

    def consent_rules(self) -> ConsentRules:
        rules = ConsentRules(
            events=_pairs("consent_required_events", self.consent_required_events, str),
            fields=_pairs("consent_required_fields", self.consent_required_fields, str),
        )
        try:
            check_rules(rules)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return rules


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
    settings.consent_rules()
    settings.sender_config()
    if settings.processing not in {"inline", "off"}:
        raise SettingsError("processing: expected inline or off")
    if settings.profile_cache_size < 0:
        raise SettingsError("profile_cache_size: expected 0 or more")
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
