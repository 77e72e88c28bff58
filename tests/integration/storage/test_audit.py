"""The audit log keeps who changed what, newest first, filterable by target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nurture.database.engine import Database
from nurture.storage import audit

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_record_and_page_newest_first(db: Database) -> None:
    with db.begin() as conn:
        for i in range(5):
            audit.record(
                conn,
                at=T0 + timedelta(minutes=i),
                actor="user:ann",
                action="contact.tag",
                target_kind="contact",
                target_id=str(i % 2),
                detail={"tag": f"t{i}"},
                client_addr="203.0.113.9",
            )
    with db.read() as conn:
        first = audit.recent(conn, limit=3)
        rest = audit.recent(conn, limit=3, before_id=first[-1]["id"])
        only_one = audit.recent(conn, target_kind="contact", target_id="1")
    assert [r["detail"]["tag"] for r in first] == ["t4", "t3", "t2"]
    assert [r["detail"]["tag"] for r in rest] == ["t1", "t0"]
    assert first[0]["at"] == T0 + timedelta(minutes=4)
    assert first[0]["client_addr"] == "203.0.113.9"
    assert [r["detail"]["tag"] for r in only_one] == ["t3", "t1"]


def test_rolled_back_change_leaves_no_record(db: Database) -> None:
    try:
        with db.begin() as conn:
            audit.record(conn, at=T0, actor="key:ci", action="contact.erase")
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    with db.read() as conn:
        assert audit.recent(conn) == []
