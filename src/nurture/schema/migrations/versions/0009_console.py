"""console: people, sessions, login throttling, intake roll-ups, the webhook inbox

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, Json, UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("disabled_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_console_users"),
        sa.UniqueConstraint("name", name="uq_console_users_name"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("last_seen_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("client_addr", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_sessions"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["console_users.id"],
            name="fk_console_sessions_user_id_console_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_at", UtcDateTime, nullable=False),
        sa.Column("blocked_until", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_login_failures"),
    )
    op.create_table(
        "intake_counts",
        sa.Column("bucket", UtcDateTime, nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(160), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("last_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("bucket", "source", "metric", name="pk_intake_counts"),
    )
    op.create_table(
        "inbox_deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("event_ids", Json, nullable=False),
        sa.Column("payload", sa.Text, nullable=True),
        sa.Column("headers", Json, nullable=False),
        sa.Column("client_addr", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_deliveries"),
    )
    op.create_index("ix_inbox_deliveries_source", "inbox_deliveries", ["source", "id"])
    op.create_index("ix_messages_sent_at", "messages", ["sent_at"])
    op.create_index(
        "ix_jobs_dead",
        "jobs",
        ["id"],
        sqlite_where=sa.text("status = 'dead'"),
        postgresql_where=sa.text("status = 'dead'"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_dead", table_name="jobs")
    op.drop_index("ix_messages_sent_at", table_name="messages")
    op.drop_index("ix_inbox_deliveries_source", table_name="inbox_deliveries")
    op.drop_table("inbox_deliveries")
    op.drop_table("intake_counts")
    op.drop_table("login_failures")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_index("ix_console_sessions_user_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("console_users")
