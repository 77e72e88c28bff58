"""foundation: contacts, identities, events inbox, timeline, api keys

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Blob, Id, Json, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("first_name", sa.String(200), nullable=True),
        sa.Column("last_name", sa.String(200), nullable=True),
        sa.Column("phone", sa.String(64), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=True),
        sa.Column("attributes", Json, nullable=False),
        sa.Column("tags", Json, nullable=False),
        sa.Column("segments", Json, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default=sa.text("'subscribed'")),
        sa.Column("score", sa.Integer, nullable=False, server_default=sa.text("50")),
        sa.Column("engagement", Json, nullable=False),
        sa.Column("rfm", Json, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("last_event_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.UniqueConstraint("email", name="uq_contacts_email"),
    )
    op.create_table(
        "identities",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("value", sa.String(320), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identities"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_identities_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("kind", "value", name="uq_identities_kind_value"),
    )
    op.create_index("ix_identities_contact_id", "identities", ["contact_id"])
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("available_at", UtcDateTime, nullable=False),
        sa.Column("contact_key", sa.String(400), nullable=True),
        sa.Column("contact_id", Id, nullable=True),
        sa.Column("raw", Blob, nullable=True),
        sa.Column("content_type", sa.String(100), nullable=True),
        sa.Column("canonical", Json, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("processed_at", UtcDateTime, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("depth", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("parent_id", Id, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("dedupe_key", name="uq_events_dedupe_key"),
    )
    op.create_index(
        "ix_events_pending",
        "events",
        ["partition", "id"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_events_status_type", "events", ["status", "type"])
    op.create_index("ix_events_contact_id", "events", ["contact_id"])
    op.create_table(
        "timeline",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("detail", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_timeline"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_timeline_contact_id_contacts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_timeline_contact", "timeline", ["contact_id", "id"])
    op.create_table(
        "api_keys",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("last_used_at", UtcDateTime, nullable=True),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("timeline")
    op.drop_table("events")
    op.drop_table("identities")
    op.drop_table("contacts")
