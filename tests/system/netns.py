"""Several "hosts" on one machine: network namespaces joined by a bridge, each running real
processes. Used by ``test_scaleout.py`` and ``bench/scaleout.py``.

Topology (one per run, names carry a run id so runs never collide)::

    root namespace (the test: load generator and checker)
        bridge nb-<id> 10.a.b.254/24
          |-- veth --> nurture-pg-<id>    10.a.b.1   PostgreSQL (its own cluster) + SMTP sink
          |-- veth --> nurture-app1-<id>  10.a.b.11  nurture serve + nurture worker
          `-- veth --> nurture-app2-<id>  10.a.b.12  nurture serve + nurture worker

Every host reaches the others only over its veth, so ``cut`` (the veth down) is a host that
vanished from the network: no FIN or RST reaches the database, as after a power cut.
``Cluster.close`` kills every process it started and deletes the namespaces and the bridge,
whatever happened; a run that was itself killed is swept by the next one (``sweep_stale``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from nurture.testing import new_secret, standard_request

ROOT = Path(__file__).resolve().parents[2]
NURTURE = str(Path(sys.executable).parent / "nurture")
PG_PORT = 5432
SMTP_PORT = 2525
APP_PORT = 8000
EMAIL_FROM = "Shop <shop@example.com>"
# Owner files of live runs: a run killed before its clean-up is swept by the next one.
STATE_DIR = Path(tempfile.gettempdir()) / "nurture-netns"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why this machine cannot build namespaces (None: it can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if not postgres_bindir():
        return "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/postgres) are not installed"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = f"nurture-probe-{uuid.uuid4().hex[:6]}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


def postgres_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Delete what runs killed before their clean-up left behind (their owner pid is gone)."""
    if not STATE_DIR.exists():
        return
    for owner in STATE_DIR.glob("*.owner"):
        run_id = owner.stem
        try:
            pid = int(owner.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _pid_alive(pid):
            continue
        Network(run_id, ()).teardown()
        for data in Path(tempfile.gettempdir()).glob(f"nurture-pg-{run_id}-*"):
            shutil.rmtree(data, ignore_errors=True)
        owner.unlink(missing_ok=True)


# -- the network ----------------------------------------------------------------------------


@dataclass
class Host:
    role: str
    ns: str
    ip: str
    veth: str


def _free_subnet() -> str:
    used = run("ip", "-4", "addr").stdout + run("ip", "-4", "route").stdout
    rng = random.Random()
    for _ in range(200):
        prefix = f"10.{rng.randrange(200, 250)}.{rng.randrange(0, 256)}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test network")


class Network:
    """A bridge in the root namespace and one namespace per host."""

    def __init__(self, run_id: str, roles: tuple[str, ...]) -> None:
        self.run_id = run_id
        self.bridge = f"nb-{run_id}"
        self.prefix = ""
        self.hosts: dict[str, Host] = {}
        self.roles = roles

    def build(self) -> None:
        self.prefix = _free_subnet()
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.prefix}.254/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for n, role in enumerate(self.roles):
            host = Host(
                role,
                f"nurture-{role}-{self.run_id}",
                f"{self.prefix}.{1 if role == 'pg' else 10 + n}",
                f"nv-{self.run_id}-{role[:1]}{n}",
            )
            run("ip", "netns", "add", host.ns)
            self.hosts[role] = host
            # The peer is born inside the namespace: no clash with the machine's own eth0.
            run(
                "ip",
                "link",
                "add",
                host.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.ns,
            )
            run("ip", "link", "set", host.veth, "master", self.bridge)
            run("ip", "link", "set", host.veth, "up")
            inside = ("ip", "netns", "exec", host.ns, "ip")
            run(*inside, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            run(*inside, "link", "set", "eth0", "up")
            run(*inside, "link", "set", "lo", "up")

    def exec(self, role: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[role].ns, *argv]

    def cut(self, role: str) -> None:
        """The host drops off the network: its link goes down, nothing more leaves or arrives."""
        run("ip", "link", "set", self.hosts[role].veth, "down")
        run(*self.exec(role, "ip", "link", "set", "eth0", "down"))

    def teardown(self) -> None:
        # Deleting a namespace deletes its end of each veth, and so the pair.
        for ns in run("ip", "netns", "list", check=False).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith("nurture-") and name.endswith(f"-{self.run_id}"):
                # Any process still inside (only after a crash of the test itself) goes too.
                pids = run("ip", "netns", "pids", name, check=False).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                run("ip", "netns", "del", name, check=False)
        run("ip", "link", "del", self.bridge, check=False)


# -- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def wait_until(what: str, ready: Callable[[], bool], timeout: float, *procs: Proc) -> float:
    """Poll ``ready`` until true; fail naming ``what`` (and any process that died meanwhile).
    Returns the seconds it took (reported, never asserted)."""
    start = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - start
        for proc in procs:
            if not proc.alive():
                raise AssertionError(
                    f"{proc.name} exited with {proc.popen.returncode} before {what}:\n{proc.tail()}"
                )
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Options:
    """How the application hosts run (``NURTURE_*`` values)."""

    time_scale: float = 24_000.0  # 264 h of campaign in 40 s
    # Short, so a dead host's jobs come back quickly; not so short that a heartbeat delayed on
    # an oversubscribed machine lets a live attempt's lease expire (5 s did, at load 20).
    lease_seconds: float = 10.0
    grace_seconds: float = 10.0
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    # Extra PostgreSQL settings (e.g. shared_preload_libraries=pg_stat_statements to profile).
    pg_settings: dict[str, str] = field(default_factory=dict)


class Cluster:
    """One PostgreSQL host (with the SMTP sink) and ``apps`` application hosts."""

    def __init__(self, workdir: Path, apps: int = 2, options: Options | None = None) -> None:
        self.run_id = uuid.uuid4().hex[:6]
        self.workdir = workdir
        self.options = options or Options()
        self.app_roles = tuple(f"app{i + 1}" for i in range(apps))
        self.net = Network(self.run_id, ("pg", *self.app_roles))
        self.procs: list[Proc] = []
        self.pgdata: Path | None = None
        self.forms_secret = new_secret()
        self.record = workdir / "smtp.jsonl"
        self.serve: dict[str, Proc] = {}
        self.worker: dict[str, Proc] = {}
        self._engine: Engine | None = None

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        sweep_stale()
        STATE_DIR.mkdir(exist_ok=True)
        (STATE_DIR / f"{self.run_id}.owner").write_text(f"{os.getpid()}\n")
        try:
            self.net.build()
            self._start_postgres()
            self._start_smtp()
            self._migrate()
            for role in self.app_roles:
                self.start_app(role)
            for role in self.app_roles:
                self.wait_app_ready(role)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        # Applications first (they hold connections), the database last.
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=20)
        self.net.teardown()
        if self.pgdata is not None:
            shutil.rmtree(self.pgdata, ignore_errors=True)
        (STATE_DIR / f"{self.run_id}.owner").unlink(missing_ok=True)

    def spawn(
        self, name: str, role: str, argv: list[str], env: dict[str, str] | None = None
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                self.net.exec(role, *argv),
                cwd=ROOT,
                env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    # -- the database host --------------------------------------------------------------

    @property
    def pg_ip(self) -> str:
        return self.net.hosts["pg"].ip

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{self.pg_ip}:{PG_PORT}/nurture"

    def _start_postgres(self) -> None:
        bindir = postgres_bindir()
        assert bindir is not None
        # Outside the test's tmp_path: pytest's directories are private to root, and the
        # server runs as the postgres user.
        self.pgdata = Path(tempfile.mkdtemp(prefix=f"nurture-pg-{self.run_id}-"))
        shutil.chown(self.pgdata, "postgres", "postgres")
        data = self.pgdata / "data"
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        # --no-sync only skips initdb's own flush of the fresh files; the server keeps fsync on.
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        subprocess.run(
            [*as_postgres, *initdb, "-E", "UTF8", "--locale=C", "--no-sync"],
            check=True,
            capture_output=True,
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.net.prefix}.0/24 trust\n")
        settings = {
            "listen_addresses": self.pg_ip,
            "port": str(PG_PORT),
            "unix_socket_directories": str(self.pgdata),
            "max_connections": "300",
            "shared_buffers": "64MB",
            **self.options.pg_settings,
        }
        flags = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        server = self.spawn(
            "postgres", "pg", [*as_postgres, str(bindir / "postgres"), "-D", str(data), *flags]
        )

        def ready() -> bool:
            probe = [str(bindir / "pg_isready"), "-q", "-h", self.pg_ip, "-p", str(PG_PORT)]
            return subprocess.run(probe, check=False).returncode == 0

        wait_until("PostgreSQL to accept connections", ready, 60, server)
        admin = create_engine(
            f"postgresql+psycopg://postgres@{self.pg_ip}:{PG_PORT}/postgres",
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
        )
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE nurture"))
        admin.dispose()

    def _start_smtp(self) -> None:
        ready = self.workdir / "smtp.ready"
        argv = [sys.executable, "-m", "tests.system.smtp_sink", self.pg_ip, str(SMTP_PORT)]
        sink = self.spawn("smtp", "pg", [*argv, str(self.record), str(ready)])
        wait_until("the SMTP sink", ready.exists, 30, sink)

    def _migrate(self) -> None:
        subprocess.run(
            [NURTURE, "migrate"], env=self.app_env("app1"), check=True, capture_output=True
        )

    @property
    def engine(self) -> Engine:
        """The checker's own connection to the database host (from the root namespace)."""
        if self._engine is None:
            self._engine = create_engine(
                "postgresql+psycopg://" + self.database_url.split("://", 1)[1], poolclass=NullPool
            )
        return self._engine

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    # -- application hosts --------------------------------------------------------------

    def app_ip(self, role: str) -> str:
        return self.net.hosts[role].ip

    def app_url(self, role: str) -> str:
        return f"http://{self.app_ip(role)}:{APP_PORT}"

    def app_env(self, role: str) -> dict[str, str]:
        o = self.options
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NURTURE_DATABASE_URL": self.database_url,
            "NURTURE_HOST": self.app_ip(role),
            "NURTURE_PORT": str(APP_PORT),
            "NURTURE_FORMS_SECRET": self.forms_secret,
            "NURTURE_TRACK_SECRET": self.forms_secret,
            "NURTURE_EMAIL_PROVIDER": "smtp",
            "NURTURE_SMTP_URL": f"smtp://{self.pg_ip}:{SMTP_PORT}",
            "NURTURE_EMAIL_FROM": EMAIL_FROM,
            "NURTURE_SECRET_KEY": "scale-out-test",
            "NURTURE_PUBLIC_URL": self.app_url(role),
            # The shared SMTP bucket (10/s by default) would set the pace, not the hosts.
            "NURTURE_EMAIL_RATE_PER_SECOND": "100000",
            "NURTURE_TIME_SCALE": str(o.time_scale),
            "NURTURE_JOB_LEASE_SECONDS": str(o.lease_seconds),
            "NURTURE_JOB_GRACE_SECONDS": str(o.grace_seconds),
            "NURTURE_DB_DEAD_CLIENT_SECONDS": str(o.lease_seconds),
            "NURTURE_JOB_MAX_IDLE_SECONDS": "0.5",
            "NURTURE_WORKER_POLL_SECONDS": "0.5",
            "NURTURE_LOG_LEVEL": o.log_level,
            "NURTURE_OUTBOX_DIR": str(self.workdir / f"outbox-{role}"),
            **o.extra_env,
        }

    def start_app(self, role: str) -> None:
        env = self.app_env(role)
        self.serve[role] = self.spawn(f"{role}-serve", role, [NURTURE, "serve"], env)
        self.worker[role] = self.spawn(f"{role}-worker", role, [NURTURE, "worker"], env)

    def wait_app_ready(self, role: str) -> None:
        url = self.app_url(role) + "/readyz"

        def ready() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(f"{role} to serve", ready, 90, self.serve[role], self.worker[role])
        log = self.worker[role].log
        wait_until(
            f"{role}'s worker to start",
            lambda: b"worker started" in log.read_bytes(),
            90,
            self.worker[role],
        )

    def freeze(self, role: str) -> None:
        """Stop the host's processes where they are (SIGSTOP): its database sessions keep
        whatever they hold, so the test can look before deciding to kill."""
        for proc in (self.serve[role], self.worker[role]):
            proc.popen.send_signal(signal.SIGSTOP)

    def thaw(self, role: str) -> None:
        for proc in (self.serve[role], self.worker[role]):
            proc.popen.send_signal(signal.SIGCONT)

    def kill_host(self, role: str) -> None:
        """The host dies: off the network first (nothing it says reaches anyone), then its
        processes are SIGKILLed. The database learns of it only through its own timeouts."""
        self.net.cut(role)
        for proc in (self.serve[role], self.worker[role]):
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait(timeout=30)

    def worker_pid_tag(self, role: str) -> str:
        """What identifies this host's worker in ``jobs.worker`` (``host:pid:nonce``)."""
        return f"%:{self.worker[role].pid}:%"

    # -- the SMTP record ----------------------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        try:
            lines = self.record.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in lines if line.strip()]


# -- the campaign's signups -----------------------------------------------------------------


def signup_payload(i: int, run_id: str) -> dict[str, Any]:
    rng = random.Random(i)
    red = rng.randrange(0, 4)
    return {
        "email": f"lead{i}-{run_id}@example.com",
        "firstName": f"Lead{i}",
        "businessName": f"Shop {i}",
        "assessmentScore": rng.randrange(10, 95),
        "redSystems": red,
        "orangeSystems": rng.randrange(0, 3),
        "yellowSystems": rng.randrange(0, 3),
        "greenSystems": 6 - red,
        "weakestSystem1": "Lead follow-up",
    }


@dataclass
class Ack:
    email: str
    status: int
    host: str
    attempts: int


class Signups:
    """Posts signed signups to the application hosts, round robin, at a steady rate; every
    ``unsubscribe_every``-th contact then unsubscribes (a signed ``email.unsubscribed`` on the
    track route), so the campaign has exits too.

    A request that fails (connection refused, timeout, 5xx) is retried on another live host with
    the same ``webhook-id``, as a load balancer would: the inbox's dedupe makes that safe. A host
    marked down gets no new requests.
    """

    PATH = "/webhooks/forms/christmas-assessment"

    def __init__(
        self,
        cluster: Cluster,
        count: int,
        rate: float,
        concurrency: int = 8,
        unsubscribe_every: int = 0,
    ) -> None:
        self.cluster = cluster
        self.count = count
        self.rate = rate
        self.concurrency = concurrency
        self.unsubscribe_every = unsubscribe_every
        self.live = list(cluster.app_roles)
        self.acks: dict[str, Ack] = {}
        self.unsubscribed: set[str] = set()
        self.failures: list[str] = []
        self.sent = 0
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started_at = 0.0
        self.finished_at = 0.0

    def mark_down(self, role: str) -> None:
        with self.lock:
            self.live = [r for r in self.live if r != role]

    def _deliver(
        self, clients: dict[str, httpx.Client], i: int, path: str, payload: Any, msg_id: str
    ) -> tuple[int, str, int] | str:
        """Post until a host acknowledges (200 duplicate counts: an earlier attempt committed);
        returns (status, host, attempts), or the last failure."""
        last = ""
        for attempt in range(1, 9):
            with self.lock:
                live = list(self.live)
            role = live[(i + attempt) % len(live)]
            body, headers = standard_request(
                self.cluster.forms_secret, payload, datetime.now(UTC), msg_id=msg_id
            )
            try:
                r = clients[role].post(path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                last = f"{role}: {exc!r}"
                continue
            if r.status_code in (200, 202):
                return r.status_code, role, attempt
            last = f"{role}: {r.status_code} {r.text[:200]}"
            if r.status_code < 500:
                break
            time.sleep(0.2)
        return last

    def _post(self, clients: dict[str, httpx.Client], i: int) -> None:
        run_id = self.cluster.run_id
        payload = signup_payload(i, run_id)
        email = payload["email"]
        got = self._deliver(clients, i, self.PATH, payload, f"msg_signup_{run_id}_{i}")
        if isinstance(got, str):
            with self.lock:
                self.failures.append(f"signup {i}: {got}")
            return
        with self.lock:
            self.acks[email] = Ack(email, *got)
        if not self.unsubscribe_every or i % self.unsubscribe_every:
            return
        # Posted after the signup was acknowledged: it lands behind it in the contact's partition.
        event = {"type": "email.unsubscribed", "contact": {"email": email}, "data": {}}
        got = self._deliver(clients, i, "/webhooks/track", event, f"msg_unsub_{run_id}_{i}")
        with self.lock:
            if isinstance(got, str):
                self.failures.append(f"unsubscribe {i}: {got}")
            else:
                self.unsubscribed.add(email)

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        timeout = httpx.Timeout(10.0, connect=3.0)
        clients = {
            role: httpx.Client(base_url=self.cluster.app_url(role), timeout=timeout)
            for role in self.cluster.app_roles
        }
        self.started_at = time.monotonic()
        try:
            with ThreadPoolExecutor(self.concurrency) as pool:
                for i in range(self.count):
                    due = self.started_at + i / self.rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    pool.submit(self._post, clients, i)
                    self.sent = i + 1
        finally:
            self.finished_at = time.monotonic()
            for client in clients.values():
                client.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"signups still posting after {timeout:.0f} s")


@contextlib.contextmanager
def cluster(workdir: Path, apps: int = 2, options: Options | None = None) -> Iterator[Cluster]:
    with Cluster(workdir, apps, options) as c:
        yield c
