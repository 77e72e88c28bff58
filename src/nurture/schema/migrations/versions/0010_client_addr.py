"""events.client_addr: the address each webhook delivery came from (behind a trusted proxy, the
client's, from X-Forwarded-For)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable without a default: neither database rewrites the existing rows.
    op.add_column("events", sa.Column("client_addr", sa.String(64), nullable=True))


def downgrade() -> None:
    # SQLite has had DROP COLUMN since 3.35; no copy of the inbox is made.
    op.drop_column("events", "client_addr")
