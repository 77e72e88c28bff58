"""``nurture contacts export|erase`` as an operator runs them, bad input included."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from typer.testing import CliRunner

from nurture.cli.main import app
from nurture.clock import VirtualClock
from nurture.contacts import suppression
from nurture.database.engine import Database
from nurture.storage import audit
from nurture.storage import contacts as contact_store
from tests.helpers import new_contact

runner = CliRunner()


def run(args: list[str], database_url: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, args, env={"NURTURE_DATABASE_URL": database_url}, input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(result.output.split())


def test_export_to_stdout_and_file_then_erase(
    db: Database, clock: VirtualClock, database_url: str, tmp_path: Path
) -> None:
    cid = new_contact(db, clock, "ann@example.com", last_name="Secret")
    code, out = run(["contacts", "export", "ANN@example.com"], database_url)
    assert code == 0, out
    assert json.loads(out)["contact"]["last_name"] == "Secret"  # whitespace-normalised JSON
    target = tmp_path / "ann.json"
    code, out = run(["contacts", "export", str(cid), "-o", str(target)], database_url)
    assert code == 0, out
    assert json.loads(target.read_text())["contact"]["id"] == cid

    code, out = run(["contacts", "erase", "ann@example.com"], database_url, stdin="n\n")
    assert code == 1 and "not erased" in out
    with db.read() as conn:
        assert contact_store.load(conn, cid) is not None
    code, out = run(["contacts", "erase", "ann@example.com", "--yes"], database_url)
    assert code == 0, out
    assert f"erased contact {cid}" in out
    with db.read() as conn:
        assert contact_store.load(conn, cid) is None
        assert suppression.check(conn, None, "ann@example.com", transactional=True) == "erased"
        actions = [(e["action"], e["actor"]) for e in audit.recent(conn)]
    me = f"cli:{getpass.getuser()}"
    assert actions == [("contact.erase", me), ("contact.export", me), ("contact.export", me)]


def test_bad_input_names_the_problem_and_changes_nothing(
    db: Database, clock: VirtualClock, database_url: str, tmp_path: Path
) -> None:
    new_contact(db, clock, "ann@example.com")
    code, out = run(["contacts", "erase", "nobody@example.com", "--yes"], database_url)
    assert code == 1 and "no contact with e-mail nobody@example.com" in out
    code, out = run(["contacts", "erase", "not an address", "--yes"], database_url)
    assert code == 1 and "neither an e-mail address nor a contact id" in out
    code, out = run(["contacts", "export", "999999"], database_url)
    assert code == 1 and "no contact 999999" in out
    code, out = run(
        ["contacts", "export", "ann@example.com", "-o", str(tmp_path / "missing" / "x.json")],
        database_url,
    )
    assert code == 1 and "No such file or directory" in out
    unreachable = f"sqlite:///{tmp_path}/no/such/dir/nurture.db"
    code, out = run(["contacts", "erase", "ann@example.com", "--yes"], unreachable)
    assert code == 1 and "database unavailable" in out
    with db.read() as conn:
        assert contact_store.id_by_email(conn, "ann@example.com") is not None
        # A failed export writes no audit entry: nothing was handed out.
        assert [e["action"] for e in audit.recent(conn)] == []
