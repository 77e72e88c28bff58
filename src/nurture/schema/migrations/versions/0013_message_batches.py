"""message batches: provider batch requests kept until their members are settled

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Blob, Json, UtcDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_batches",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("message_ids", Json, nullable=False),
        sa.Column("body", Blob, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_message_batches"),
    )


def downgrade() -> None:
    op.drop_table("message_batches")
