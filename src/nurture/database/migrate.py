"""Alembic, driven from code: ``nurture migrate`` and the readiness check use it."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, inspect, text

from nurture.database.engine import Database, translate_errors
from nurture.schema.migrations import DIRECTORY
from nurture.schema.tables import metadata

MIGRATIONS = DIRECTORY


def _config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    cfg = _config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def head_revision(db: Database) -> str | None:
    # One linear chain; a second head means two migrations claim the same parent.
    return ScriptDirectory.from_config(_config(db)).get_current_head()


def current_revision(db: Database) -> str | None:
    with translate_errors(), db.read_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(db: Database) -> bool:
    return current_revision(db) == head_revision(db)


def known_revision(revision: str) -> bool:
    """Whether this code's migrations contain ``revision`` (a backup's); a newer one is not."""
    try:
        return ScriptDirectory(str(MIGRATIONS)).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown or malformed revision
        return False


def file_revision(path: str) -> str | None:
    """The schema revision of a SQLite file, opened read-only (a backup is never changed)."""
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with translate_errors(), engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def holds_data(db: Database) -> bool:
    """Whether any nurture table (or an alembic revision) exists with a row in it."""
    with db.read() as conn:
        names = set(inspect(conn).get_table_names())
        for name in sorted(
            names & ({t.name for t in metadata.sorted_tables} | {"alembic_version"})
        ):
            if conn.execute(text(f'SELECT 1 FROM "{name}" LIMIT 1')).first() is not None:
                return True
    return False


def drop_everything(db: Database) -> None:
    """Every table of the database (what ``restore --force`` replaces), in one transaction."""
    with db.begin() as conn:
        existing = MetaData()
        existing.reflect(conn)
        existing.drop_all(conn)
