"""history retention: find the events a live enrolment still reads without a scan

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

LIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_index(
        "ix_enrollments_live_event",
        "enrollments",
        ["event_id"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_enrollments_live_event", table_name="enrollments")
