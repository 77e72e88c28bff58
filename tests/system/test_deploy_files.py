"""What ``deploy/`` ships passes its own tools and agrees with nurture's settings and metrics.

- systemd units: ``systemd-analyze verify`` on the instances an operator enables. The only
  change made for the test machine is ExecStart's path (verify checks that the binary exists;
  /opt/nurture/venv does not here): it points at this virtualenv's ``nurture``.
- nginx site: ``nginx -t`` with only the certificate paths pointed at a throw-away certificate.
- Prometheus rules: ``promtool check rules`` and ``promtool test rules`` when promtool is
  installed (Debian: ``apt-get install prometheus``); always, every metric a rule reads must be
  one ``/metrics`` serves.

CI (NURTURE_REQUIRE_DEPLOY_TOOLS=1, set by .ci/run) fails instead of skipping when systemd-analyze
or nginx is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme
import yaml

from nurture.config import Settings
from nurture.testing import harness, new_secret
from tests.system.serving import NURTURE, ROOT, main_conf, nginx_binary

pytestmark = pytest.mark.slow

DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
REQUIRE = os.environ.get("NURTURE_REQUIRE_DEPLOY_TOOLS") == "1"
SHIPPED_BINARY = "/opt/nurture/venv/bin/nurture"


def tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if Path(p).exists()), None
    )
    if found is None:
        if REQUIRE:
            pytest.fail(f"NURTURE_REQUIRE_DEPLOY_TOOLS=1 but {name} is not installed")
        pytest.skip(f"{name} is not installed")
    return found


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key`` -> every value it is given (keys may repeat), across sections."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    for unit in UNITS.iterdir():
        text = unit.read_text()
        if "ExecStart=" in text:
            assert text.count(SHIPPED_BINARY) == 1, unit
            text = text.replace(SHIPPED_BINARY, NURTURE)
        (tmp_path / unit.name).write_text(text)
    # The instances an operator enables (docs/deploy.md): a port, a worker number.
    (tmp_path / "nurture-serve@8001.service").symlink_to("nurture-serve@.service")
    (tmp_path / "nurture-worker@1.service").symlink_to("nurture-worker@.service")
    names = ["nurture-serve@8001.service", "nurture-worker@1.service", "nurture.target"]
    done = subprocess.run(
        [analyze, "verify", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        check=False,
    )
    # Warnings (an unknown key, a key in the wrong section) count as failures too.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("unit", ["nurture-serve@.service", "nurture-worker@.service"])
def test_units_run_hardened_as_nurture_and_stop_within_their_grace(unit: str) -> None:
    s = unit_settings(UNITS / unit)
    expected = {
        "User": ["nurture"],
        "EnvironmentFile": ["/etc/nurture/nurture.env"],
        "Restart": ["on-failure"],
        "KillSignal": ["SIGTERM"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "NoNewPrivileges": ["yes"],
        "PrivateTmp": ["yes"],
        "StateDirectory": ["nurture"],
        "CapabilityBoundingSet": [""],
        "WantedBy": ["nurture.target"],
    }
    assert {k: s.get(k) for k in expected} == expected
    defaults = Settings()
    grace = (
        defaults.shutdown_grace_seconds
        if "serve" in unit
        else defaults.job_grace_seconds + defaults.worker_poll_seconds
    )
    # systemd must not SIGKILL a drain nurture would finish: a margin above nurture's grace.
    assert seconds(s["TimeoutStopSec"][0]) >= grace + 5


def test_the_environment_file_is_a_valid_configuration() -> None:
    values: dict[str, str] = {}
    for line in (DEPLOY / "nurture.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            assert name.startswith("NURTURE_") and name == name.strip(), line
            values[name] = value.strip('"')
    fields = {k.removeprefix("NURTURE_").lower(): v for k, v in values.items()}
    assert set(fields) <= set(Settings.model_fields), set(fields) - set(Settings.model_fields)
    settings = Settings(**fields)  # type: ignore[arg-type]
    assert settings.trusted_proxy_list == ["127.0.0.1"]
    serve = unit_settings(UNITS / "nurture-serve@.service")
    worker = unit_settings(UNITS / "nurture-worker@.service")
    assert settings.shutdown_grace_seconds + 5 <= seconds(serve["TimeoutStopSec"][0])
    assert settings.job_grace_seconds + 5 <= seconds(worker["TimeoutStopSec"][0])


def test_nginx_site_passes_nginx_t(tmp_path: Path) -> None:
    binary = nginx_binary()
    site = (DEPLOY / "nginx" / "nurture.conf").read_text()
    issued = trustme.CA().issue_cert("nurture.example.com")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    for shipped, here in [
        ("/etc/letsencrypt/live/nurture.example.com/fullchain.pem", cert),
        ("/etc/letsencrypt/live/nurture.example.com/privkey.pem", key),
    ]:
        assert site.count(shipped) == 1
        site = site.replace(shipped, str(here))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(main_conf(tmp_path, tmp_path / "site.conf"))
    done = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "[warn]" not in done.stderr, done.stderr
    # nginx refuses exactly what nurture would: the same 1 MiB.
    assert re.search(r"client_max_body_size 1m;", site)
    assert Settings().max_body_bytes == 1024 * 1024


RULES = DEPLOY / "prometheus" / "nurture-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "nurture-alerts.test.yml"


def test_promtool_checks_and_tests_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    for args in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        done = subprocess.run(
            [promtool, *args], cwd=RULES.parent, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def served_metric_names(database_url: str) -> set[str]:
    with harness(Settings(database_url=database_url, track_secret=new_secret())) as h:
        text = h.client.get("/metrics").text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_rule_reads_metrics_nurture_serves(sqlite_url: str) -> None:
    served = served_metric_names(sqlite_url)
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 10
    read: set[str] = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning"), rule
        assert rule["annotations"]["summary"], rule
        # Metric names: identifiers not followed by "(" (functions) and not label names.
        expr = re.sub(r"\{[^}]*\}", "", rule["expr"])
        expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)
        for name in re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", expr):
            if name in ("and", "or", "unless", "offset", "bool"):
                continue
            read.add(name)
    assert read - served <= {"up"}, f"rules read metrics /metrics does not serve: {read - served}"
    # And what an operator alerts on is covered: each of these is read by some rule.
    assert {
        "nurture_webhook_requests_total",
        "nurture_processing_lag_seconds",
        "nurture_jobs_lateness_seconds",
        "nurture_jobs",
        "nurture_messages",
        "nurture_database_errors_total",
        "nurture_database_up",
    } <= read
