"""sequences: enrollments, enrollment steps, tombstones

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollments",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("sequence_id", sa.String(200), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("anchor_at", UtcDateTime, nullable=False),
        sa.Column("enrolled_at", UtcDateTime, nullable=False),
        sa.Column("ended_at", UtcDateTime, nullable=True),
        sa.Column("end_reason", sa.String(300), nullable=True),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("reschedules", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name="pk_enrollments"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_enrollments_contact_id_contacts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_enrollments_contact_id", "enrollments", ["contact_id"])
    op.create_index(
        "uq_enrollments_live",
        "enrollments",
        ["sequence_id", "key"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index("ix_enrollments_sequence", "enrollments", ["sequence_id", "status", "id"])
    op.create_index("ix_enrollments_key", "enrollments", ["sequence_id", "key"])
    op.create_table(
        "enrollment_steps",
        sa.Column("enrollment_id", Id, nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=True),
        sa.Column("ran_at", UtcDateTime, nullable=True),
        sa.Column("sent_at", UtcDateTime, nullable=True),
        sa.Column("template", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", "step_id", name="pk_enrollment_steps"),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name="fk_enrollment_steps_enrollment_id_enrollments",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "enrollment_tombstones",
        sa.Column("sequence_id", sa.String(200), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("sequence_id", "key", name="pk_enrollment_tombstones"),
    )


def downgrade() -> None:
    op.drop_table("enrollment_tombstones")
    op.drop_table("enrollment_steps")
    op.drop_index("ix_enrollments_key", table_name="enrollments")
    op.drop_index("ix_enrollments_sequence", table_name="enrollments")
    op.drop_index("uq_enrollments_live", table_name="enrollments")
    op.drop_index("ix_enrollments_contact_id", table_name="enrollments")
    op.drop_table("enrollments")
