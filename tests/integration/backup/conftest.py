from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text


@pytest.fixture
def scratch_url(database_url: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """New, empty databases of the same kind as ``database_url`` (dropped afterwards)."""
    made: list[str] = []
    server = database_url.rsplit("/", 1)[0]

    def make() -> str:
        name = f"nurture_scratch_{uuid.uuid4().hex[:10]}"
        if database_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path / (name + '.db')}"
        admin = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        made.append(name)
        return f"{server}/{name}"

    yield make
    if made:
        admin = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
