"""``run_demo``: the whole loop in one process.

Start a mail sink and an SMS/push sink, start embedded Rapport pointed at
them, load the shop's definitions through the admin API, then run the shop
and the live account side by side until Ctrl-C (or ``rounds`` rounds of the
story). A step that fails prints its error and the demo goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import secrets
import shutil
import signal
import socket
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from rapport.api.app import create_app
from rapport.demo import definitions
from rapport.demo.account import Account
from rapport.demo.shop import PERSONAS, ROUND_SECONDS, Action, stamp, story
from rapport.demo.sinks import PUSH_PATH, SMS_ACCOUNT_SID, Inbox, QuietServer, http_sink, mail_sink
from rapport.runtime.service import Rapport
from rapport.settings import Settings

MARKER = ".rapport-demo"
POLL_SECONDS = 0.5


def say(line: str) -> None:
    print(line, flush=True)


def prepare_data_dir(path: Path) -> bool:
    """Start from scratch in a directory the demo made before (or an empty one);
    refuse one holding anything else."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            say(f"{path} holds data the demo did not write: choose another --data-dir")
            return False
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("written by `rapport demo`: removed at its next start\n")
    return True


def with_sinks(settings: Settings, smtp_port: int, http_base: str) -> Settings:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return dataclasses.replace(
        settings,
        public_url=f"http://{host}:{settings.port}",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_tls="none",
        smtp_username="",
        smtp_password="",
        email_from="Rapport Demo Shop <shop@demo.test>",
        sms_base_url=http_base,
        sms_account_sid=SMS_ACCOUNT_SID,
        sms_auth_token="demo-token",
        sms_from="+15550001111",
        push_gateway_url=f"{http_base}{PUSH_PATH}",
        push_gateway_token="demo-token",
    )


ROUNDS_ENV = "RAPPORT_DEMO_ROUNDS"
"""Set to N for a bounded run: N rounds of the story, then the demo stops by itself."""


def rounds_from_env() -> int | None:
    raw = os.environ.get(ROUNDS_ENV, "").strip()
    if not raw:
        return None
    try:
        rounds = int(raw)
    except ValueError:
        say(f"{ROUNDS_ENV}={raw!r} is not a number: running until Ctrl-C")
        return None
    return rounds if rounds > 0 else None


async def run_demo(settings: Settings, *, rounds: int | None = None) -> None:
    """Run until Ctrl-C, or until ``rounds`` rounds of the story have played out
    (default: ``RAPPORT_DEMO_ROUNDS``, else forever)."""
    if rounds is None:
        rounds = rounds_from_env()
    if not settings.database_url and not prepare_data_dir(settings.sqlite_dir):
        raise SystemExit(2)
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        say("the demo's mail sink needs aiosmtpd: pip install -e '.[dev]' (make demo does)")
        raise SystemExit(2) from None
    inbox = Inbox()
    async with mail_sink(inbox) as smtp_port, http_sink(inbox) as http_base:
        await _serve(with_sinks(settings, smtp_port, http_base), inbox, rounds)


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so a busy port is one clear line, not a traceback."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        say(f"cannot listen on {host}:{port} ({exc.strerror}): try --port with another port")
        raise SystemExit(2) from None
    return sock


async def _serve(settings: Settings, inbox: Inbox, rounds: int | None) -> None:
    sock = listen(settings.host, settings.port)
    runtime = await Rapport.open(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server = QuietServer(
        uvicorn.Config(
            create_app(runtime), host=settings.host, port=settings.port, log_level="warning"
        )
    )
    serve_task = asyncio.create_task(server.serve(sockets=[sock]))
    tasks: list[asyncio.Task[None]] = []
    try:
        while not server.started:
            if serve_task.done():
                serve_task.result()
                return
            await asyncio.sleep(0.05)
        write_key = await runtime.create_key("write")
        secret_key = await runtime.create_key("secret")
        base = settings.public_url
        admin = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {secret_key}"}, timeout=30
        )
        browser = httpx.AsyncClient(base_url=base, auth=(write_key, ""), timeout=30)
        async with admin, browser:
            say(f"Rapport is running at {base}; loading the shop's definitions:")
            journeys = await load_definitions(admin)
            print_guide(base, write_key, secret_key, settings)
            account = Account(admin, inbox, journeys, out=say)
            shop = Shop(admin, browser, account)
            tasks = [
                asyncio.create_task(shop.run(rounds), name="demo-shop"),
                asyncio.create_task(watch(account, stop), name="demo-account"),
            ]
            waiters = [serve_task, asyncio.create_task(stop.wait()), tasks[0]]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if tasks[0].done() and not stop.is_set():
                await asyncio.sleep(ROUND_SECONDS / 4)  # let the last messages arrive
                await account.poll()
                say(f"The story is over: {account.printed_deliveries} messages delivered.")
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        for task in tasks:
            task.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serve_task
        await runtime.close()


async def load_definitions(admin: httpx.AsyncClient) -> list[str]:
    """Everything the shop defines, through the admin API; returns the journeys applied."""

    async def step(label: str, call: Callable[[], Any]) -> bool:
        try:
            response: httpx.Response = await call()
            if response.status_code >= 400:
                say(f"  FAILED {label}: HTTP {response.status_code} {response.text[:300]}")
                return False
        except Exception as exc:  # a definition that fails is reported, the rest still load
            say(f"  FAILED {label}: {type(exc).__name__}: {exc}")
            return False
        return True

    done: list[str] = []
    if await step("policy", partial(admin.put, "/api/policy", json=definitions.POLICY)):
        done.append("policy (2 promotions an hour at most)")
    for pool, codes in definitions.CODE_POOLS.items():
        created = await step(
            f"code pool {pool}", partial(admin.post, "/api/code-pools", json={"id": pool})
        )
        codes_url = f"/api/code-pools/{pool}/codes"
        if created and await step(f"codes of {pool}", partial(admin.post, codes_url, json=codes)):
            done.append(f"code pool {pool}")
    for kind, path, items in (
        ("segment", "/api/segments", definitions.SEGMENTS),
        ("computed trait", "/api/computed-traits", definitions.COMPUTED_TRAITS),
        ("template", "/api/templates", definitions.TEMPLATES),
    ):
        for item in items:
            body = {k: v for k, v in item.items() if k != "id"}
            put = partial(admin.put, f"{path}/{item['id']}", json=body)
            if await step(f"{kind} {item['id']}", put):
                done.append(f"{kind} {item['id']}")
    journeys: list[str] = []
    yaml = {"Content-Type": "application/yaml"}
    for source in definitions.journeys():
        if source.text is None:
            say(f"  skipped journey {source.id}: {source.origin} is not in this installation")
            continue
        url = f"/api/journeys/{source.id}"
        put = partial(admin.put, url, content=source.text.encode(), headers=yaml)
        if await step(f"journey {source.id}", put) and await step(
            f"publishing {source.id}", partial(admin.post, f"{url}/publish")
        ):
            journeys.append(source.id)
            done.append(f"journey {source.id} ({source.origin})")
    for line in done:
        say(f"  ok  {line}")
    return journeys


async def watch(account: Account, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await account.poll()
        except Exception as exc:  # the account goes on: a failed look is one line
            account.error("looking around", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)


class Shop:
    """Plays the story in real time, round after round."""

    def __init__(self, admin: httpx.AsyncClient, browser: httpx.AsyncClient, account: Account):
        self.admin = admin
        self.browser = browser
        self.account = account
        run = secrets.token_hex(3)
        counter = itertools.count(1)
        self.next_id: Callable[[], str] = lambda: f"demo-{run}-{next(counter):04d}"

    async def run(self, rounds: int | None) -> None:
        for round_ in itertools.count(1):
            if rounds is not None and round_ > rounds:
                return
            if round_ > 1:
                say(f"\n--- round {round_}: new customers, the same stories ---")
            for persona in PERSONAS:
                self.account.people[persona.user_id(round_)] = persona.name(round_)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for action in story(round_):
                await asyncio.sleep(max(0.0, start + action.at - loop.time()))
                await self.act(action, round_)
            if rounds is None or round_ < rounds:
                await asyncio.sleep(max(0.0, start + ROUND_SECONDS - loop.time()))

    async def act(self, action: Action, round_: int) -> None:
        who = action.persona.name(round_)
        line = f"{who} {action.says}"
        try:
            response = await self._send(action, round_)
        except Exception as exc:  # the shop goes on: one failed call is one line
            say(f"{_now()}  !  shop: {line}: {type(exc).__name__}: {exc}")
            return
        if response.status_code >= 400:
            say(f"{_now()}  !  shop: {line}: HTTP {response.status_code} {response.text[:200]}")
            return
        say(f"{_now()}  SHOP   {line}")

    async def _send(self, action: Action, round_: int) -> httpx.Response:
        if action.via == "support":
            user = action.persona.user_id(round_)
            traits = action.calls[0]
            self.account.triggers[f"support:{user}"] = f"support tagged {action.persona.first_name}"
            return await self.admin.patch(
                f"/api/profiles/user_id:{user}/traits", json={"traits": traits}
            )
        calls = [dict(call) for call in action.calls]
        for named in stamp(calls, self.next_id):
            self.account.triggers[named["id"]] = f"{action.persona.name(round_)} {action.says}"
        if action.via == "warehouse":
            return await self.admin.post("/v1/business-events", json=calls[0])
        client = self.browser if action.via == "browser" else self.admin
        return await client.post("/v1/batch", json={"batch": calls})


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def print_guide(base: str, write_key: str, secret_key: str, settings: Settings) -> None:
    auth = f"-H 'Authorization: Bearer {secret_key}'"
    say(
        f"""
Rapport is running at {base}  (data in {settings.sqlite_dir.resolve()})
Mail goes to a local SMTP sink (127.0.0.1:{settings.smtp_port}); SMS and push
to a local HTTP sink ({settings.sms_base_url}). A simulated shop is starting:
Mei signs up, Dana hesitates over a leather jacket while her shoes are
backordered, Sam looks at the same jacket with a support ticket open.

  write key  (ingest, safe in web pages): {write_key}
  secret key (admin API):                 {secret_key}

Look around while it runs:
  curl {auth} {base}/api/profiles/email:dana@example.com
  curl {auth} {base}/api/profiles/anonymous_id:anon-mei-1     # merged at sign-up
  curl {auth} {base}/api/profiles/user_id:u-dana/messages   # what she got, and why
  curl {auth} {base}/api/journeys/leather-jacket-nudge/instances
  curl {auth} {base}/api/segments
  curl -u {write_key}: {base}/v1/track \\
       -d '{{"userId": "u-dana", "event": "Order Delivered"}}'
  open {base}/docs        (OpenAPI: {base}/openapi.json)

Press Ctrl-C to stop. The live account follows:
  SHOP what the shop did | SEG segments | FLOW journeys | EMAIL/SMS/PUSH delivered | DROP
""",
    )
