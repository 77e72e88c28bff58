"""retention: marks of the pruning pass, and an index of finished jobs

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

FINISHED = "status IN ('done', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "retention_marks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_id", Id, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_retention_marks"),
    )
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["updated_at"],
        sqlite_where=sa.text(FINISHED),
        postgresql_where=sa.text(FINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.drop_table("retention_marks")
