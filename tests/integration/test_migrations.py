"""Migrating an empty database must build exactly the model in storage/schema.py."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from nurture.storage import migrate
from nurture.storage.engine import Database
from nurture.storage.schema import metadata


def test_migrated_schema_equals_model(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_migrate_is_idempotent_and_current(db: Database) -> None:
    migrate.upgrade(db)
    migrate.upgrade(db)
    assert migrate.is_current(db)
    assert migrate.current_revision(db) == migrate.head_revision(db)
