"""integrations: Notion pages mirrored per contact

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notion_pages",
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("page_id", sa.String(64), nullable=True),
        sa.Column("seq", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("synced_hash", sa.String(64), nullable=True),
        sa.Column("synced_at", UtcDateTime, nullable=True),
        sa.Column("requested_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("endpoint", "contact_id", name="pk_notion_pages"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_notion_pages_contact_id_contacts",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("notion_pages")
