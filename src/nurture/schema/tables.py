"""The schema, as SQLAlchemy Core tables. Alembic migrations must build exactly this.

Feature modules add their tables below their own heading; keep one heading per migration.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from nurture.schema.types import Blob, Id, Json, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# --- 0001 foundation -------------------------------------------------------------------------

contacts = Table(
    "contacts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=True, unique=True),
    Column("first_name", String(200), nullable=True),
    Column("last_name", String(200), nullable=True),
    Column("phone", String(64), nullable=True),
    Column("time_zone", String(64), nullable=True),
    Column("attributes", Json, nullable=False),
    Column("tags", Json, nullable=False),
    Column("segments", Json, nullable=False),
    # unsubscribed / bounced / complained are sticky: only an explicit re-subscribe lifts them.
    Column("status", String(20), nullable=False, server_default=text("'subscribed'")),
    Column("score", Integer, nullable=False, server_default=text("50")),
    Column("engagement", Json, nullable=False),
    Column("rfm", Json, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_event_at", UtcDateTime, nullable=True),
)

identities = Table(
    "identities",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("kind", String(64), nullable=False),
    Column("value", String(320), nullable=False),
    UniqueConstraint("kind", "value"),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("type", String(128), nullable=False),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("partition", Integer, nullable=False),
    # pending -> processed | failed (after the last attempt). Retries stay pending with a later
    # available_at so a failing event never blocks the rest of its partition.
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("available_at", UtcDateTime, nullable=False),
    Column("contact_key", String(400), nullable=True),
    Column("contact_id", Id, nullable=True, index=True),
    Column("raw", Blob, nullable=True),
    Column("content_type", String(100), nullable=True),
    Column("canonical", Json, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("processed_at", UtcDateTime, nullable=True),
    Column("error", Text, nullable=True),
    Column("depth", Integer, nullable=False, server_default=text("0")),
    Column("parent_id", Id, nullable=True),
    # 0010: where a webhook delivery came from (the client's address behind a trusted proxy);
    # NULL for events nurture derived itself or imported.
    Column("client_addr", String(64), nullable=True),
    Index(
        "ix_events_pending",
        "partition",
        "id",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    Index("ix_events_status_type", "status", "type"),
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", Id, nullable=True),
    Column("at", UtcDateTime, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("rule_id", String(200), nullable=True),
    Column("detail", Json, nullable=False),
    Index("ix_timeline_contact", "contact_id", "id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)

# --- 0002 jobs (scheduler) -------------------------------------------------------------------

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    # The idempotency key: one job, and so one effect, per key.
    Column("key", String(300), nullable=False, unique=True),
    # scheduled -> running -> done | failed (retry due at run_at) | dead; cancelled at any time.
    Column("status", String(16), nullable=False),
    Column("run_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # NULL: the handler's (or the retry policy's) default.
    Column("max_attempts", Integer, nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("worker", String(100), nullable=True),
    Column("payload", Json, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("contact_id", Id, nullable=True, index=True),
    Column("enrollment_id", Id, nullable=True, index=True),
    # Set by a cancel that lands while the job runs: the attempt finishes, no other starts.
    Column("cancelled_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The claim query reads only this index, so its cost does not grow with far-future timers.
    Index(
        "ix_jobs_due",
        "run_at",
        sqlite_where=text("status IN ('scheduled', 'failed')"),
        postgresql_where=text("status IN ('scheduled', 'failed')"),
    ),
    Index(
        "ix_jobs_lease",
        "lease_until",
        sqlite_where=text("status = 'running'"),
        postgresql_where=text("status = 'running'"),
    ),
    # No index leads with status: without statistics SQLite would pick it for the claim and
    # sort every pending timer instead of reading ix_jobs_due in order.
)

# --- 0003 delivery (messages, suppressions, endpoints, deliveries) ----------------------------

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # The job key: claiming this row before the provider call is what makes a send exactly-once.
    Column("key", String(300), nullable=False, unique=True),
    Column("channel", String(16), nullable=False),
    Column("provider", String(32), nullable=False),
    # sending (outcome unknown) -> sent; retrying / failed (known not sent); suppressed / skipped.
    Column("status", String(16), nullable=False),
    Column("contact_id", Id, nullable=True, index=True),
    Column("to_address", String(320), nullable=True),
    Column("template", String(200), nullable=True),
    Column("subject", Text, nullable=True),
    Column("transactional", Boolean, nullable=False),
    Column("rule_id", String(200), nullable=True),
    Column("event_id", Id, nullable=True),
    Column("enrollment_id", Id, nullable=True),
    Column("step_id", String(200), nullable=True),
    Column("provider_message_id", String(255), nullable=True, index=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # How a crash between claim and completion was settled (idempotency_key, found_at_provider...).
    Column("settled", String(32), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("opened_at", UtcDateTime, nullable=True),
    Column("clicked_at", UtcDateTime, nullable=True),
    Column("bounced_at", UtcDateTime, nullable=True),
    Column("complained_at", UtcDateTime, nullable=True),
    Column("unsubscribed_at", UtcDateTime, nullable=True),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # No foreign key: the row outlives an erased contact, which stays suppressed by its hash.
    Column("contact_id", Id, nullable=True, index=True),
    Column("email_hash", String(64), nullable=True),
    # unsubscribed | complained | bounced | erased | manual
    Column("reason", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("event_id", Id, nullable=True),
    UniqueConstraint("email_hash", "reason"),
)

endpoints = Table(
    "endpoints",
    metadata,
    # Endpoints are declared in the automation folder; this row holds their runtime state only.
    Column("name", String(100), primary_key=True),
    Column("disabled_at", UtcDateTime, nullable=True),
    Column("disabled_reason", Text, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("endpoint", String(100), nullable=False),
    Column("job_key", String(300), nullable=False),
    Column("webhook_id", String(100), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_deliveries_endpoint", "endpoint", "id"),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    # One token bucket per provider, shared by every worker (row-locked while taking a token).
    Column("name", String(64), primary_key=True),
    Column("tokens_milli", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# --- 0004 rules (score ledger, tasks, rule fires) ----------------------------------------------

# Every change of a lead score with its cause: a rule's delta (rule_id, event_id, action_index)
# or a change of the profile part (rule_id NULL). A replayed event finds its rule rows and does
# not score twice.
score_ledger = Table(
    "score_ledger",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", Id, nullable=True),
    Column("rule_id", String(200), nullable=True),
    Column("action_index", Integer, nullable=True),
    Column("component", String(16), nullable=False),
    Column("delta", Integer, nullable=False),
    Column("reason", String(500), nullable=True),
    Column("score_before", Integer, nullable=False),
    Column("score_after", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_score_ledger_contact", "contact_id", "id"),
    UniqueConstraint("event_id", "rule_id", "action_index"),
)

# CRM tasks created by rules (``task``, ``kind: call``); the job key makes creation idempotent.
tasks = Table(
    "tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False, unique=True),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=True),
    Column("event_id", Id, nullable=True),
    Column("rule_id", String(200), nullable=True),
    Column("title", String(500), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("priority", String(32), nullable=True),
    Column("status", String(16), nullable=False, server_default=text("'open'")),
    Column("due_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_tasks_status_due", "status", "due_at"),
    Index("ix_tasks_contact_id", "contact_id"),
)

# When a rule last fired for a contact: what ``once: contact`` / ``once: 24h`` check.
rule_fires = Table(
    "rule_fires",
    metadata,
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("rule_id", String(200), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("first_at", UtcDateTime, nullable=False),
    Column("last_at", UtcDateTime, nullable=False),
)

# --- 0005 commerce (orders, order lines, products) ----------------------------------------------

# Money and quantities: exact NUMERIC on PostgreSQL, read back as float (SQLite has no decimal).
Money = Numeric(14, 2, asdecimal=False)
Quantity = Numeric(12, 3, asdecimal=False)

products = Table(
    "products",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("name", String(400), nullable=True),
    Column("category", String(100), nullable=True),
    Column("price_band", String(32), nullable=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("updated_at", UtcDateTime, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # The sender's order id (Stripe, shop, ERP document number): the idempotency key.
    Column("order_key", String(200), nullable=False, unique=True),
    Column(
        "contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("ordered_at", UtcDateTime, nullable=False),
    Column("net_amount", Money, nullable=False),
    Column("gross_amount", Money, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("source", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    # Identifies the line inside its order (line number, or the product key when the export has
    # none), so a re-import or a replayed event adds nothing.
    Column("line_key", String(200), nullable=False),
    Column("product_key", String(200), nullable=False),
    Column("label", String(400), nullable=True),
    Column("quantity", Quantity, nullable=False),
    Column("unit_price", Money, nullable=True),
    Column("net_amount", Money, nullable=False),
    Column("gross_amount", Money, nullable=True),
    UniqueConstraint("order_id", "line_key"),
)

# The distribution the last full RFM pass saw, so one contact can be scored on a purchase
# without re-ranking the whole base.
rfm_baselines = Table(
    "rfm_baselines",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("computed_at", UtcDateTime, nullable=False),
    Column("contacts", Integer, nullable=False),
    Column("distribution", Json, nullable=False),
)

# --- 0006 sequences (enrollments, steps, tombstones) --------------------------------------------

# One row per (sequence, key) enrolment; at most one of them live (``active``) per key, which the
# partial unique index enforces even for concurrent signups.
enrollments = Table(
    "enrollments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sequence_id", String(200), nullable=False),
    # The evaluated ``key:`` ("contact:12", a booking uid); a reschedule moves it to the new uid.
    Column("key", String(300), nullable=False),
    Column(
        "contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    # active -> completed (every step ran or was skipped) | exited | cancelled
    Column("status", String(16), nullable=False),
    Column("anchor_at", UtcDateTime, nullable=False),
    Column("enrolled_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("end_reason", String(300), nullable=True),
    # The event that enrolled (or last re-anchored) it: templates read its data.
    Column("event_id", Id, nullable=True),
    Column("rule_id", String(200), nullable=True),
    Column("reschedules", Integer, nullable=False, server_default=text("0")),
    Index(
        "uq_enrollments_live",
        "sequence_id",
        "key",
        unique=True,
        sqlite_where=text("status = 'active'"),
        postgresql_where=text("status = 'active'"),
    ),
    Index("ix_enrollments_sequence", "sequence_id", "status", "id"),
    Index("ix_enrollments_key", "sequence_id", "key"),
    # 0016: retention keeps the event a live enrolment's templates read.
    Index(
        "ix_enrollments_live_event",
        "event_id",
        sqlite_where=text("status = 'active'"),
        postgresql_where=text("status = 'active'"),
    ),
)

# Each step of an enrolment; its job is keyed ``seq:{enrollment_id}:{step_id}``.
enrollment_steps = Table(
    "enrollment_steps",
    metadata,
    Column("enrollment_id", Id, ForeignKey("enrollments.id", ondelete="CASCADE"), primary_key=True),
    Column("step_id", String(100), primary_key=True),
    Column("position", Integer, nullable=False),
    # scheduled -> sent | skipped (past, min_lead, suppressed, condition) | cancelled
    Column("status", String(16), nullable=False),
    Column("due_at", UtcDateTime, nullable=True),
    # When the step's job ran to an outcome (NULL: only planned, so a reschedule may re-plan it).
    Column("ran_at", UtcDateTime, nullable=True),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("template", String(200), nullable=True),
    Column("reason", Text, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

# A cancellation or reschedule seen for a key: a booking that arrives after it does not enroll.
enrollment_tombstones = Table(
    "enrollment_tombstones",
    metadata,
    Column("sequence_id", String(200), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("reason", String(64), nullable=False),
    Column("event_id", Id, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

# --- 0007 integrations ---------------------------------------------------------------------------

# One Notion page per (endpoint, contact). ``seq`` counts syncs started: the pending sync job's
# key carries it, so events arriving while a sync runs queue the next one. ``synced_hash`` is
# the hash of the properties last written: a sync that would write the same is skipped.
notion_pages = Table(
    "notion_pages",
    metadata,
    Column("endpoint", String(100), primary_key=True),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("page_id", String(64), nullable=True),
    Column("seq", Integer, nullable=False, server_default=text("0")),
    Column("synced_hash", String(64), nullable=True),
    Column("synced_at", UtcDateTime, nullable=True),
    Column("requested_at", UtcDateTime, nullable=False),
)

# --- 0008 audit ---------------------------------------------------------------------------------

# Who changed what through a page, the API or the CLI. Kept apart from the timeline because an
# erasure deletes the contact's timeline but must keep the record that it happened and who did it.
# ``actor`` is "user:<name>", "key:<name>" or "cli:<os user>"; ``client_addr`` is the address the
# trusted-proxy rules resolved (NULL for the CLI).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target_kind", String(50), nullable=True),
    Column("target_id", String(320), nullable=True),
    Column("detail", Json, nullable=False),
    Column("client_addr", String(64), nullable=True),
    Index("ix_audit_log_target_kind_target_id", "target_kind", "target_id"),
)

# --- 0009 console (people, sessions, login throttling, intake roll-ups, webhook inbox) ----------

# People who use the console. Only an Argon2id hash of the password is stored.
console_users = Table(
    "console_users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # admin | viewer
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime, nullable=True),
)

# Server-side sessions: the cookie holds a random token (HMAC-signed); only its SHA-256 is
# stored, so logout, expiry and disabling a person take effect at once and a copy of the table
# opens nothing.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "user_id",
        Id,
        ForeignKey("console_users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
    Column("client_addr", String(64), nullable=True),
)

# Failed logins per key ("name:<name>" or "addr:<address>"): each failure past the free ones
# doubles the wait before the next attempt is even checked.
login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_at", UtcDateTime, nullable=False),
    Column("blocked_until", UtcDateTime, nullable=True),
)

# Hourly roll-ups of what came in, per source: ``event:<type>`` (stored events),
# ``delivery:accepted`` / ``delivery:duplicate`` and ``rejected:<reason>`` (webhook requests).
# Counted in memory by each serving process and added here every few seconds, so ingest never
# waits for them; the overview reads a few hundred rows instead of counting the events table.
intake_counts = Table(
    "intake_counts",
    metadata,
    Column("bucket", UtcDateTime, primary_key=True),
    Column("source", String(100), primary_key=True),
    Column("metric", String(160), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("last_at", UtcDateTime, nullable=False),
)

# The last few thousand webhook requests (the console's Inbox): accepted ones point at their
# events; rejected ones keep the reason and a bounded, redacted copy of what was sent.
inbox_deliveries = Table(
    "inbox_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("source", String(100), nullable=False),
    Column("route", String(200), nullable=False),
    Column("outcome", String(16), nullable=False),  # accepted | duplicate | rejected
    Column("reason", String(32), nullable=True),
    Column("status_code", Integer, nullable=False),
    Column("detail", Text, nullable=True),
    Column("event_ids", Json, nullable=False),
    Column("payload", Text, nullable=True),
    Column("headers", Json, nullable=False),
    Column("client_addr", String(64), nullable=True),
    Index("ix_inbox_deliveries_source", "source", "id"),
)

# The overview's "e-mails sent" and the Jobs page's dead list read these instead of scanning.
Index("ix_messages_sent_at", messages.c.sent_at)
Index(
    "ix_jobs_dead",
    jobs.c.id,
    sqlite_where=text("status = 'dead'"),
    postgresql_where=text("status = 'dead'"),
)

# --- 0011 consent ---------------------------------------------------------------------------------

# What a form signup agreed to (the form's consent text and version, the consent fields as
# submitted), when and from which address. With double opt-in the row is ``pending`` until the
# person follows the signed link in the confirmation e-mail (``confirmed``); otherwise ``given``.
# Personal data: deleted with the contact on erasure.
consents = Table(
    "consents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("form_id", String(64), nullable=False),
    Column("text", Text, nullable=True),
    Column("version", String(100), nullable=True),
    Column("fields", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("given_at", UtcDateTime, nullable=False),
    Column("client_addr", String(64), nullable=True),
    # The submission: a replayed event records nothing twice.
    Column("event_id", Id, nullable=True, unique=True),
    Column("confirmed_at", UtcDateTime, nullable=True),
    Column("confirmed_addr", String(64), nullable=True),
)

# --- 0013 message batches --------------------------------------------------------------------

# A provider batch request (Resend ``POST /emails/batch``) between its members' claim and their
# completion: the exact body and idempotency key, so a batch whose answer was lost is replayed
# byte for byte (the provider then returns the first result instead of sending again). Rows live
# only for that window; completion deletes them.
message_batches = Table(
    "message_batches",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("provider", String(32), nullable=False),
    # Member message ids, in request order: item i of the answer belongs to message_ids[i].
    Column("message_ids", Json, nullable=False),
    Column("body", Blob, nullable=False),  # zlib-compressed request body
    Column("created_at", UtcDateTime, nullable=False),
)

# --- 0012 retention -----------------------------------------------------------------------------

# How far the pruning pass has walked a table it thins out in place (by id): rows up to
# ``last_id`` were handled, so a pass reads only rows it has not seen.
retention_marks = Table(
    "retention_marks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_id", Id, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Finished jobs, oldest first, for the pruning pass. Partial: the claim query's statuses are not
# in it, so the planner never takes it for the claim, and pruned rows leave it.
Index(
    "ix_jobs_finished",
    jobs.c.updated_at,
    sqlite_where=text("status IN ('done', 'cancelled')"),
    postgresql_where=text("status IN ('done', 'cancelled')"),
)

# --- 0015 console pages ---------------------------------------------------------------------------

# The Contacts page's search: name prefixes, score ranges (keyset by id within a score).
Index("ix_contacts_first_name", contacts.c.first_name)
Index("ix_contacts_last_name", contacts.c.last_name)
Index("ix_contacts_score", contacts.c.score, contacts.c.id)
# A sequence's funnel: opened and clicked messages per enrollment.
Index("ix_messages_enrollment", messages.c.enrollment_id)
# The Rules page: how often and when last each rule fired (only the rule.fired notes).
Index(
    "ix_timeline_rule_fired",
    timeline.c.rule_id,
    timeline.c.at,
    sqlite_where=text("kind = 'rule.fired'"),
    postgresql_where=text("kind = 'rule.fired'"),
)
