"""Fixtures for the channel tests: a signer and the real local providers (``tests.providers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rapport.channels.links import LinkSigner
from tests import providers
from tests.providers import HttpProvider, SmtpServer

SECRET = b"test-link-secret-0123456789abcdef"


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner(SECRET)


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    async with providers.smtp_server() as server:
        yield server


@pytest.fixture
async def http_provider() -> AsyncIterator[HttpProvider]:
    async with providers.http_provider() as provider:
        yield provider
