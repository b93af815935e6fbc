"""The ``rapport`` command: serve, worker, sender, keys, segments, settings, demo."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from rapport.runtime.logging import configure_logging
from rapport.settings import SettingsError, load_settings, settings_markdown


def _settings(config: str | None, **overrides: Any) -> Any:
    try:
        return load_settings(overrides, config_file=config)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


config_option = click.option(
    "--config", type=click.Path(dir_okay=False), default=None, help="TOML settings file."
)
data_dir_option = click.option(
    "--data-dir", default=None, help="Data directory (RAPPORT_DATA_DIR, default ./data)."
)


@click.group()
@click.version_option(package_name="rapport")
def main() -> None:
    """Rapport: one-to-one customer conversations at scale."""


@main.command()
@data_dir_option
@config_option
@click.option("--host", default=None, help="Listen address (RAPPORT_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (RAPPORT_PORT, default 8000).")
def serve(data_dir: str | None, config: str | None, host: str | None, port: int | None) -> None:
    """Run the embedded runtime: HTTP API and processing in one process."""
    import uvicorn

    from rapport.api.app import create_app

    settings = _settings(config, data_dir=data_dir, host=host, port=port)
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings=settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level if settings.log_level != "debug" else "debug",
        access_log=False,
        server_header=False,
        # Keep-alive longer than SDK flush intervals so connections are reused.
        timeout_keep_alive=30,
    )


@main.command()
@data_dir_option
@config_option
def worker(data_dir: str | None, config: str | None) -> None:
    """Only process events into profiles (pair with `serve` under RAPPORT_PROCESSING=off)."""
    _run_until_signal(_settings(config, data_dir=data_dir), process=True)


@main.command()
@data_dir_option
@config_option
def sender(data_dir: str | None, config: str | None) -> None:
    """Only deliver messages (pair with `serve`/`worker` under RAPPORT_SENDER=off).

    Composing, building and sending messages take the most CPU per message;
    a sender process of its own (or several: claims are leased, each message
    goes to one of them) takes that off the process answering the HTTP API and
    processing events. It finds what is due by polling the outbox every
    `idle_poll` seconds when it has nothing in hand (see `sender_limits`).
    """
    _run_until_signal(_settings(config, data_dir=data_dir, sender="on"), process=False)


def _run_until_signal(settings: Any, *, process: bool) -> None:
    import signal

    from rapport.runtime.service import Rapport

    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        runtime = await Rapport.open(settings)
        await runtime.start(process=process)
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        await runtime.close()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run())


def _loop_factory() -> Any:
    """uvloop where it is installed (as ``serve`` gets it through uvicorn), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return None
    return uvloop.new_event_loop


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@data_dir_option
@config_option
@click.option("--kind", type=click.Choice(["write", "secret"]), required=True)
@click.option("--workspace", default="default", show_default=True, help="Workspace name.")
def keys_create(data_dir: str | None, config: str | None, kind: str, workspace: str) -> None:
    """Create a key and print it (only the key, once: it is stored hashed)."""
    from rapport.runtime.service import Rapport

    settings = _settings(config, data_dir=data_dir)
    configure_logging("warning", settings.log_format)

    async def create() -> str:
        runtime = await Rapport.open(settings)
        try:
            return await runtime.create_key(kind, workspace)
        finally:
            await runtime.close()

    click.echo(asyncio.run(create()))


@main.group()
def segments() -> None:
    """Segment definitions and the backfills that bring profiles to them."""


workspace_option = click.option(
    "--workspace", default="default", show_default=True, help="Workspace name."
)


@segments.command("list")
@data_dir_option
@config_option
@workspace_option
def segments_list(data_dir: str | None, config: str | None, workspace: str) -> None:
    """List the segments with their version and backfill progress."""
    from rapport.cli_segments import list_segments

    settings = _settings(config, data_dir=data_dir)
    configure_logging("warning", settings.log_format)
    for line in asyncio.run(list_segments(settings, workspace)):
        click.echo(line)


@segments.command("backfill")
@data_dir_option
@config_option
@workspace_option
@click.argument("segment_id")
@click.option("--follow", is_flag=True, help="Print progress until the backfill is done.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds.")
def segments_backfill(
    data_dir: str | None,
    config: str | None,
    workspace: str,
    segment_id: str,
    follow: bool,
    interval: float,
) -> None:
    """Show a segment's backfill progress (the processor runs it)."""
    from rapport.cli_segments import follow_backfill

    settings = _settings(config, data_dir=data_dir)
    configure_logging("warning", settings.log_format)
    ok = asyncio.run(follow_backfill(settings, workspace, segment_id, follow, interval, click.echo))
    if not ok:
        raise SystemExit(1)


@main.group()
def journeys() -> None:
    """Journey definitions: validate files, apply them, publish, pause, resume."""


def _journey_result(result: tuple[list[str], bool]) -> None:
    lines, ok = result
    for line in lines:
        click.echo(line)
    if not ok:
        raise SystemExit(1)


@journeys.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def journeys_validate(files: tuple[Path, ...]) -> None:
    """Check journey files (YAML or JSON) offline; print every error with its path."""
    from rapport.cli_journeys import validate_files

    _journey_result(validate_files(files))


@journeys.command("apply")
@data_dir_option
@config_option
@workspace_option
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--publish", is_flag=True, help="Publish the saved draft (new entries take it).")
def journeys_apply(
    data_dir: str | None, config: str | None, workspace: str, file: Path, publish: bool
) -> None:
    """Save FILE as its journey's draft (a new version, or the draft replaced)."""
    from rapport.cli_journeys import apply_file

    settings = _settings(config, data_dir=data_dir)
    configure_logging("warning", settings.log_format)
    _journey_result(asyncio.run(apply_file(settings, workspace, file, publish)))


@journeys.command("list")
@data_dir_option
@config_option
@workspace_option
def journeys_list(data_dir: str | None, config: str | None, workspace: str) -> None:
    """List the journeys: state, entry version, draft version, name."""
    from rapport.cli_journeys import list_journeys

    settings = _settings(config, data_dir=data_dir)
    configure_logging("warning", settings.log_format)
    _journey_result(asyncio.run(list_journeys(settings, workspace)))


@journeys.command("show")
@data_dir_option
@config_option
@workspace_option
@click.argument("journey_id")
def journeys_show(
    data_dir: str | None, config: str | None, workspace: str, journey_id: str
) -> None:
    """Show a journey's versions and its newest definition."""
    from rapport.cli_journeys import show_journey

    settings = _settings(config, data_dir=data_dir)
    configure_logging("warning", settings.log_format)
    _journey_result(asyncio.run(show_journey(settings, workspace, journey_id)))


def _journey_action(action: str, summary: str) -> None:
    @journeys.command(action, help=summary)
    @data_dir_option
    @config_option
    @workspace_option
    @click.argument("journey_id")
    def command(data_dir: str | None, config: str | None, workspace: str, journey_id: str) -> None:
        from rapport.cli_journeys import change_journey

        settings = _settings(config, data_dir=data_dir)
        configure_logging("warning", settings.log_format)
        _journey_result(asyncio.run(change_journey(settings, workspace, journey_id, action)))


_journey_action("publish", "Publish the journey's draft; earlier versions finish their instances.")
_journey_action("pause", "Pause the journey: no entries, in-flight instances wait.")
_journey_action("resume", "Resume a paused journey.")
_journey_action("archive", "Archive every version: no entries, in-flight instances exit.")


@main.command()
@click.option("--data-dir", default="demo-data", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
def demo(data_dir: str, host: str, port: int) -> None:
    """Run the whole loop on this machine: embedded Rapport, a simulated shop acting out the
    customer stories, local mail/SMS/push sinks, and a live account of every conversation."""
    from rapport.demo import run_demo

    settings = _settings(
        None,
        data_dir=data_dir,
        host=host,
        port=port,
        # The demo shop also identifies customers by their loyalty card.
        identifier_traits="email=email,phone=phone,loyalty_id=loyalty_id",
    )
    configure_logging("warning", settings.log_format)
    asyncio.run(run_demo(settings))


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the configuration reference.")
@config_option
def settings_cmd(markdown: bool, config: str | None) -> None:
    """Show the effective settings (or the reference with --markdown)."""
    if markdown:
        click.echo(settings_markdown(), nl=False)
        return
    settings = _settings(config)
    for name, value in sorted(vars(settings).items()):
        click.echo(f"{name} = {value!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
