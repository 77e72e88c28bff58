"""jobs: the durable scheduler's table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, Json, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_at", UtcDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer, nullable=True),
        sa.Column("lease_until", UtcDateTime, nullable=True),
        sa.Column("worker", sa.String(100), nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("contact_id", Id, nullable=True),
        sa.Column("enrollment_id", Id, nullable=True),
        sa.Column("cancelled_at", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("key", name="uq_jobs_key"),
    )
    op.create_index(
        "ix_jobs_due",
        "jobs",
        ["run_at"],
        sqlite_where=sa.text("status IN ('scheduled', 'failed')"),
        postgresql_where=sa.text("status IN ('scheduled', 'failed')"),
    )
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["lease_until"],
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index("ix_jobs_contact_id", "jobs", ["contact_id"])
    op.create_index("ix_jobs_enrollment_id", "jobs", ["enrollment_id"])


def downgrade() -> None:
    op.drop_table("jobs")
