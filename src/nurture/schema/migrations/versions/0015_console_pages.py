"""console pages: indexes for the Contacts search, the sequence funnel and rule fire counts

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

FIRED = sa.text("kind = 'rule.fired'")


def upgrade() -> None:
    op.create_index("ix_contacts_first_name", "contacts", ["first_name"])
    op.create_index("ix_contacts_last_name", "contacts", ["last_name"])
    op.create_index("ix_contacts_score", "contacts", ["score", "id"])
    op.create_index("ix_messages_enrollment", "messages", ["enrollment_id"])
    op.create_index(
        "ix_timeline_rule_fired",
        "timeline",
        ["rule_id", "at"],
        sqlite_where=FIRED,
        postgresql_where=FIRED,
    )


def downgrade() -> None:
    op.drop_index("ix_timeline_rule_fired", table_name="timeline")
    op.drop_index("ix_messages_enrollment", table_name="messages")
    op.drop_index("ix_contacts_score", table_name="contacts")
    op.drop_index("ix_contacts_last_name", table_name="contacts")
    op.drop_index("ix_contacts_first_name", table_name="contacts")
