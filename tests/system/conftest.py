from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.server import RapportServer, create_key


@dataclass
class RunningRapport:
    server: RapportServer
    write_key: str
    secret_key: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}


@pytest.fixture(scope="module")
def running_rapport(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRapport]:
    data_dir: Path = tmp_path_factory.mktemp("rapport") / "data"
    write_key = create_key(data_dir, "write")
    secret_key = create_key(data_dir, "secret")
    server = RapportServer(data_dir).start()
    try:
        yield RunningRapport(server, write_key, secret_key)
    finally:
        server.stop()
