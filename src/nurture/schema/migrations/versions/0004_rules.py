"""rules: score ledger, tasks, rule fires

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "score_ledger",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("action_index", sa.Integer, nullable=True),
        sa.Column("component", sa.String(16), nullable=False),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("score_before", sa.Integer, nullable=False),
        sa.Column("score_after", sa.Integer, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_score_ledger"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_score_ledger_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "event_id",
            "rule_id",
            "action_index",
            name="uq_score_ledger_event_id_rule_id_action_index",
        ),
    )
    op.create_index("ix_score_ledger_contact", "score_ledger", ["contact_id", "id"])
    op.create_table(
        "tasks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("contact_id", Id, nullable=True),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default=sa.text("'open'")),
        sa.Column("due_at", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_tasks_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("key", name="uq_tasks_key"),
    )
    op.create_index("ix_tasks_status_due", "tasks", ["status", "due_at"])
    op.create_index("ix_tasks_contact_id", "tasks", ["contact_id"])
    op.create_table(
        "rule_fires",
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_at", UtcDateTime, nullable=False),
        sa.Column("last_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "rule_id", name="pk_rule_fires"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_rule_fires_contact_id_contacts",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("rule_fires")
    op.drop_index("ix_tasks_contact_id", table_name="tasks")
    op.drop_index("ix_tasks_status_due", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("ix_score_ledger_contact", table_name="score_ledger")
    op.drop_table("score_ledger")
