"""delivery: messages, suppressions, outbound endpoints and their delivery log, rate limits

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("contact_id", Id, nullable=True),
        sa.Column("to_address", sa.String(320), nullable=True),
        sa.Column("template", sa.String(200), nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("transactional", sa.Boolean, nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("enrollment_id", Id, nullable=True),
        sa.Column("step_id", sa.String(200), nullable=True),
        sa.Column("provider_message_id", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("settled", sa.String(32), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("sent_at", UtcDateTime, nullable=True),
        sa.Column("delivered_at", UtcDateTime, nullable=True),
        sa.Column("opened_at", UtcDateTime, nullable=True),
        sa.Column("clicked_at", UtcDateTime, nullable=True),
        sa.Column("bounced_at", UtcDateTime, nullable=True),
        sa.Column("complained_at", UtcDateTime, nullable=True),
        sa.Column("unsubscribed_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("key", name="uq_messages_key"),
    )
    op.create_index("ix_messages_contact_id", "messages", ["contact_id"])
    op.create_index("ix_messages_provider_message_id", "messages", ["provider_message_id"])
    op.create_table(
        "suppressions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("contact_id", Id, nullable=True),
        sa.Column("email_hash", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("event_id", Id, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_suppressions"),
        sa.UniqueConstraint("email_hash", "reason", name="uq_suppressions_email_hash_reason"),
    )
    op.create_index("ix_suppressions_contact_id", "suppressions", ["contact_id"])
    op.create_table(
        "endpoints",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("disabled_at", UtcDateTime, nullable=True),
        sa.Column("disabled_reason", sa.Text, nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_endpoints"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("job_key", sa.String(300), nullable=False),
        sa.Column("webhook_id", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
    )
    op.create_index("ix_deliveries_endpoint", "deliveries", ["endpoint", "id"])
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tokens_milli", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rate_limits"),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
    op.drop_table("deliveries")
    op.drop_table("endpoints")
    op.drop_table("suppressions")
    op.drop_table("messages")
