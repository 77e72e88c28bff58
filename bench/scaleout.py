"""Scale-out benchmark: one application host against two, on the network-namespace cluster of
``tests/system/test_scaleout.py`` (``tests/system/netns.py``: a PostgreSQL host with its own
cluster and an SMTP relay, application hosts each running ``nurture serve`` + ``nurture worker``).
Needs root and ``ip netns``.

    sudo .venv/bin/python bench/scaleout.py [--signups 600] [--events 2000] [--concurrency 32]

For each configuration (1 host, then 2 hosts, each on a fresh cluster):

1. ingest, workers stopped: ``--signups`` signed Christmas-form posts, then ``--events`` signed
   ``page.viewed`` track events, spread round robin over the hosts' ``serve`` by ``--concurrency``
   requests in flight, all signed before the clock starts. Accepted (202) per second.
2. processing: the workers start; events processed per second until the inbox is empty (every
   event: the posts and what processing derives from them, e.g. ``contact.created``), and
   e-mails per second until each signup's first Christmas e-mail (due at once) reached the relay.

Beside each rate: CPU seconds per item of the nurture processes, of PostgreSQL (every server
process of the cluster) and of the load generator (this process), and PostgreSQL commits and WAL
flushes per item (``pg_stat_database``, ``pg_stat_wal``). All hosts share this machine's cores:
"two hosts" is two more processes on the same CPUs, so the ratio shows what the design allows
(no shared lock serialising the hosts), not what two machines would do. The one-host run is the
baseline measured in the same invocation; compare ratios, not absolute figures, across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.system import netns  # noqa: E402

from nurture.testing import standard_request  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of a process (and of its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def postgres_cpu(c: netns.Cluster) -> float:
    """Every server process of the cluster (backends come and go: the postmaster's reaped-children
    counters keep what the gone ones used)."""
    ns = c.net.hosts["pg"].ns
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    postmaster = next(p for p in c.procs if p.name == "postgres").pid
    total = 0.0
    for pid in (int(p) for p in pids.split()):
        if pid == postmaster:
            total += cpu_seconds(pid, children=True)
            continue
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:  # a backend that just ended: the postmaster's counters have it
            continue
        if name == "postgres":
            total += cpu_seconds(pid)
    return total


def machine_busy() -> float:
    """CPU seconds every process on the machine used so far (all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / TICKS


@dataclass
class Snapshot:
    at: float
    nurture: float
    postgres: float
    client: float
    machine: float
    commits: int
    wal_syncs: int
    emails: int

    @classmethod
    def take(cls, c: netns.Cluster, procs: list[netns.Proc]) -> Snapshot:
        stats = c.query(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = 'nurture')"
            " AS commits, (SELECT wal_sync FROM pg_stat_wal) AS syncs"
        )[0]
        return cls(
            time.monotonic(),
            sum(cpu_seconds(p.pid) for p in procs),
            postgres_cpu(c),
            time.process_time(),
            machine_busy(),
            int(stats.commits),
            int(stats.syncs),
            len(c.received()),
        )


@dataclass
class Rate:
    what: str
    items: int
    seconds: float
    nurture_cpu: float
    postgres_cpu: float
    client_cpu: float
    machine_cpu: float
    commits: int
    wal_syncs: int

    @classmethod
    def between(cls, what: str, items: int, a: Snapshot, b: Snapshot) -> Rate:
        return cls(
            what,
            items,
            b.at - a.at,
            b.nurture - a.nurture,
            b.postgres - a.postgres,
            b.client - a.client,
            b.machine - a.machine,
            b.commits - a.commits,
            b.wal_syncs - a.wal_syncs,
        )

    @property
    def per_second(self) -> float:
        return self.items / self.seconds

    def row(self) -> str:
        per = 1000 / self.items
        ours = (self.nurture_cpu + self.postgres_cpu + self.client_cpu) / self.seconds
        machine = self.machine_cpu / self.seconds
        return (
            f"{self.what:<22} {self.items:>6} {self.per_second:>8.1f} "
            f"{self.nurture_cpu * per:>10.2f} {self.postgres_cpu * per:>9.2f} "
            f"{self.client_cpu * per:>8.2f} {self.commits / self.items:>8.2f} "
            f"{self.wal_syncs / self.items:>7.2f} {ours:>6.2f} {machine:>8.2f}"
        )


HEADER = (
    f"{'':<22} {'items':>6} {'per s':>8} {'ms CPU/it':>10} {'PG ms/it':>9} {'gen ms':>8} "
    f"{'commits':>8} {'fsyncs':>7} {'cores':>6} {'machine':>8}"
)
LEGEND = """\
ms CPU/it: CPU of the nurture processes doing it (serve for ingest, worker after) per item;
PG ms/it: CPU of every PostgreSQL server process per item; gen ms: the load generator's;
commits, fsyncs: PostgreSQL transactions committed and WAL flushes per item;
cores: CPU used by all of those per wall second; machine: by every process on the machine."""


def signed(c: netns.Cluster, signups: int, events: int) -> list[tuple[str, bytes, dict[str, str]]]:
    now = datetime.now(UTC)
    out = []
    for i in range(signups):
        body, headers = standard_request(
            c.forms_secret, netns.signup_payload(i, c.run_id), now, msg_id=f"bench-s-{i}"
        )
        out.append((netns.Signups.PATH, body, headers))
    for i in range(events):
        ev = {
            "type": "page.viewed",
            "contact": {"email": f"lead{i % max(signups, 1)}-{c.run_id}@example.com"},
            "data": {"url": f"/pricing?v={i}"},
        }
        body, headers = standard_request(c.forms_secret, ev, now, msg_id=f"bench-e-{i}")
        out.append(("/webhooks/track", body, headers))
    return out


async def post_all(
    c: netns.Cluster, requests: list[tuple[str, bytes, dict[str, str]]], concurrency: int
) -> int:
    roles = c.app_roles
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = [httpx.AsyncClient(base_url=c.app_url(r), timeout=30, limits=limits) for r in roles]
    queue = list(enumerate(requests))
    accepted = 0

    async def drive() -> None:
        nonlocal accepted
        while queue:
            i, (path, body, headers) = queue.pop()
            r = await clients[i % len(clients)].post(path, content=body, headers=headers)
            if r.status_code != 202:
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")
            accepted += 1

    try:
        await asyncio.gather(*(drive() for _ in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return accepted


def measure(apps: int, args: argparse.Namespace, workdir: Path) -> list[Rate]:
    # Time scale 1: only each signup's first e-mail (at 0 h) is due during the run.
    options = netns.Options(time_scale=1.0, log_level="WARNING")
    with netns.Cluster(workdir, apps, options) as c:
        for role in c.app_roles:  # ingest alone first: workers wait
            c.worker[role].popen.send_signal(signal.SIGSTOP)
        serve = [c.serve[r] for r in c.app_roles]
        workers = [c.worker[r] for r in c.app_roles]
        requests = signed(c, args.signups, args.events)
        rates = []
        for what, part in (
            ("signups accepted", requests[: args.signups]),
            ("track events accepted", requests[args.signups :]),
        ):
            a = Snapshot.take(c, serve)
            asyncio.run(post_all(c, part, args.concurrency))
            rates.append(Rate.between(what, len(part), a, Snapshot.take(c, serve)))
        total = int(c.scalar("SELECT count(*) FROM events"))
        a = Snapshot.take(c, workers)
        for proc in workers:
            proc.popen.send_signal(signal.SIGCONT)
        netns.wait_until(
            "the inbox to drain",
            lambda: c.scalar("SELECT count(*) FROM events WHERE status <> 'processed'") == 0,
            1800,
            *workers,
        )
        processed = int(c.scalar("SELECT count(*) FROM events"))
        drained = Snapshot.take(c, workers)
        rates.append(Rate.between("events processed", processed, a, drained))
        # E-mails go out while events are processed; timed alone from the drain on.
        netns.wait_until(
            "every first e-mail", lambda: len(c.received()) >= args.signups, 1800, *workers
        )
        done = Snapshot.take(c, workers)
        if done.emails - drained.emails < args.signups // 4:
            print(f"only {done.emails - drained.emails} e-mails left after the drain: use more")
        rates.append(Rate.between("e-mails sent", done.emails - drained.emails, drained, done))
        assert total >= args.signups + args.events
        assert done.emails == args.signups, "one first e-mail per signup"
        return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signups", type=int, default=600)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    reason = netns.unavailable()
    if reason:
        sys.exit(f"bench/scaleout.py: {reason}")
    results: dict[int, list[Rate]] = {}
    with tempfile.TemporaryDirectory(prefix="nurture-scaleout-") as tmp:
        for apps in (1, 2):
            workdir = Path(tmp) / f"{apps}-hosts"
            workdir.mkdir()
            results[apps] = measure(apps, args, workdir)
    print(f"\nscale-out on {os.cpu_count()} cores shared by every host (and other users)")
    print(f"{args.signups} signups, {args.events} track events, {args.concurrency} in flight")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}\n{LEGEND}\n")
    for apps, rates in results.items():
        print(f"{apps} application host{'s' if apps > 1 else ''}")
        print(HEADER)
        for rate in rates:
            print(rate.row())
        print()
    print("two hosts / one host:")
    for one, two in zip(results[1], results[2], strict=True):
        print(f"  {one.what:<22} {two.per_second / one.per_second:5.2f}x")


if __name__ == "__main__":
    main()
