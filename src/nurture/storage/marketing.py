"""Marketing e-mails as the contact-silence window sees them, read from the delivery feature's
``messages`` table (which this module only reads)."""

from __future__ import annotations

import polars as pl
from sqlalchemy import Connection, false, func, select

from nurture.schema.tables import messages

# ``sending`` means the outcome is unknown (the provider may have accepted it): for a silence
# window "maybe mailed" counts as mailed, at the time of that attempt.
COUNTED = ("sent", "sending")
LAST_SENDS = pl.Schema({"contact_id": pl.Int64(), "last_sent_at": pl.Datetime("us", "UTC")})


def last_sends(conn: Connection) -> pl.DataFrame:
    """``contact_id, last_sent_at``: when each contact was last sent a non-transactional
    e-mail (any template, rule, sequence or campaign)."""
    at = func.max(func.coalesce(messages.c.sent_at, messages.c.updated_at))
    rows = conn.execute(
        select(messages.c.contact_id, at)
        .where(
            messages.c.channel == "email",
            messages.c.transactional == false(),
            messages.c.status.in_(COUNTED),
            messages.c.contact_id.is_not(None),
        )
        .group_by(messages.c.contact_id)
    ).all()
    return pl.DataFrame([tuple(r) for r in rows], schema=LAST_SENDS, orient="row")
