"""``nurture users ...`` as an operator runs them."""

from __future__ import annotations

from typer.testing import CliRunner

from nurture.cli.main import app
from nurture.database.engine import Database
from nurture.storage import audit
from nurture.storage import users as user_store

runner = CliRunner()


def run(args: list[str], database_url: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, args, input=stdin, env={"NURTURE_DATABASE_URL": database_url})
    return result.exit_code, " ".join(result.output.split())


def test_create_list_and_change_users(database_url: str, db: Database) -> None:
    code, out = run(
        ["users", "create", "ada", "--role", "admin", "--password-stdin"],
        database_url,
        "a-long-password\n",
    )
    assert code == 0, out
    assert "created admin ada" in out
    code, out = run(
        ["users", "create", "vic", "--role", "viewer"],
        database_url,
        "a-long-password\na-long-password\n",
    )  # the prompt asks twice
    assert code == 0, out
    code, out = run(["users", "list"], database_url)
    assert "ada admin active" in out and "vic viewer active" in out
    assert run(["users", "role", "vic", "admin"], database_url)[0] == 0
    assert run(["users", "disable", "ada"], database_url)[0] == 0
    code, out = run(["users", "list"], database_url)
    assert "ada admin disabled" in out and "vic admin active" in out
    assert (
        run(
            ["users", "password", "vic", "--password-stdin"],
            database_url,
            "another-long-password\n",
        )[0]
        == 0
    )
    with db.read() as conn:
        stored = user_store.by_name(conn, "vic")
        entries = audit.recent(conn, target_kind="user")
    assert stored is not None and "another-long-password" not in stored["password_hash"]
    assert [e["action"] for e in entries[:3]] == [
        "user.password_changed",
        "user.disabled",
        "user.role_changed",
    ]
    assert all(e["actor"].startswith("cli:") for e in entries)


def test_bad_input_names_the_field(database_url: str) -> None:
    code, out = run(
        ["users", "create", "ada", "--role", "boss", "--password-stdin"], database_url, "short\n"
    )
    assert code == 1
    assert "role: must be admin or viewer" in out
    assert "password: must be at least 10 characters" in out
    code, out = run(
        ["users", "create", "ann", "--role", "viewer"],
        database_url,
        "a-long-password\ndifferent-password\n",
    )
    assert code == 1 and "the two passwords differ" in out
    run(
        ["users", "create", "ann", "--role", "viewer", "--password-stdin"],
        database_url,
        "a-long-password\n",
    )
    code, out = run(
        ["users", "create", "ann", "--role", "viewer", "--password-stdin"],
        database_url,
        "a-long-password\n",
    )
    assert code == 1 and "already exists" in out
    code, out = run(["users", "disable", "nobody"], database_url)
    assert code == 1 and "no user 'nobody'" in out
