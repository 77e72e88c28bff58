"""consent: what a form signup agreed to, when, from where; double opt-in confirmations

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from nurture.schema.types import Id, Json, UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("form_id", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("version", sa.String(100), nullable=True),
        sa.Column("fields", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("given_at", UtcDateTime, nullable=False),
        sa.Column("client_addr", sa.String(64), nullable=True),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("confirmed_at", UtcDateTime, nullable=True),
        sa.Column("confirmed_addr", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_consents_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("event_id", name="uq_consents_event_id"),
    )
    op.create_index("ix_consents_contact_id", "consents", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_consents_contact_id", table_name="consents")
    op.drop_table("consents")
