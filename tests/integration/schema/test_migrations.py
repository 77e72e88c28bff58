"""Migrating an empty database must build exactly the model in schema/tables.py."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from nurture.database import migrate
from nurture.database.engine import Database
from nurture.schema.tables import metadata


def test_migrated_schema_equals_model(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_migrate_is_idempotent_and_current(db: Database) -> None:
    migrate.upgrade(db)
    migrate.upgrade(db)
    assert migrate.is_current(db)
    assert migrate.current_revision(db) == migrate.head_revision(db)


def test_migrations_form_one_linear_chain() -> None:
    # Two migrations naming the same parent would give two heads; users then could not say
    # which schema they run, and `nurture migrate` would apply branches in an arbitrary order.
    script = ScriptDirectory.from_config(migrate._config(Database("sqlite://")))
    assert len(script.get_heads()) == 1
    chain = [rev.revision for rev in script.walk_revisions()]
    assert chain == sorted(chain, reverse=True)


def test_downgrade_to_base_then_upgrade_again(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'down.db'}")
    migrate.upgrade(db)
    cfg = migrate._config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert migrate.current_revision(db) is None
    migrate.upgrade(db)
    assert migrate.is_current(db)
    db.dispose()
