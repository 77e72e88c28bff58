"""audit: who changed what through a page, the API or the CLI

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, Json, UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target_kind", sa.String(50), nullable=True),
        sa.Column("target_id", sa.String(320), nullable=True),
        sa.Column("detail", Json, nullable=False),
        sa.Column("client_addr", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_target_kind_target_id", "audit_log", ["target_kind", "target_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_target_kind_target_id", table_name="audit_log")
    op.drop_table("audit_log")
