"""The main job from the shell: confirmation, dry run, exit codes, signals, and the SIGKILL crash test."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from mipay_bulk import Faults
from mipay_bulk.journal import Journal

from . import sheetmaker as mk
from .conftest import TEST_API_KEY, TEST_PASSWORD, find_secrets
from .test_runner import numbers, sheet


def env_for(sb, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPAY_")}
    env.update({"MIPAY_GATEWAY_URL": sb.url, "MIPAY_USERNAME": "sandbox", "MIPAY_PASSWORD": TEST_PASSWORD,
                "MIPAY_API_KEY": TEST_API_KEY, "MIPAY_IP_ADDRESS": "127.0.0.1", "PYTHONUNBUFFERED": "1",
                **extra})
    return env


def cli(args, env, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mipay_bulk", *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, **kw)


def test_main_job_needs_confirmation_without_a_terminal(tmp_path, sandbox):
    path = sheet(tmp_path, 3)
    out = cli([str(path), "--journal", str(tmp_path / "j.sqlite"), "--quiet"], env_for(sandbox))
    assert out.returncode == 2 and "pass --yes" in out.stderr
    assert sandbox.ledger() == []


def test_main_job_sends_and_reports_with_exit_codes(tmp_path, sandbox):
    j = str(tmp_path / "j.sqlite")
    good = sheet(tmp_path, 3)
    out = cli([str(good), "--yes", "--journal", j, "--quiet", "--out", str(tmp_path / "r.xlsx")], env_for(sandbox))
    assert out.returncode == 0, out.stderr
    assert "3 of 3 payouts accepted, KES 303" in out.stdout and (tmp_path / "r.xlsx").exists()
    again = cli(["run", str(good), "--yes", "--journal", j, "--quiet"], env_for(sandbox))
    assert again.returncode == 2 and "already planned" in again.stderr
    mixed = mk.csv_file(tmp_path / "m.csv", [["0712345670", 100, "B2C"], ["0700000001", 100, "B2C"]],
                        header=["Phone", "Amount", "Product"])
    out = cli([str(mixed), "--yes", "--journal", j, "--quiet"], env_for(sandbox))
    assert out.returncode == 1 and "1 rejected" in out.stdout
    runs = cli(["runs", "--journal", j], env_for(sandbox))
    assert runs.returncode == 0 and "m.csv" in runs.stdout and "p.csv" in runs.stdout
    assert len(sandbox.ledger()) == 4
    for text in (out.stdout, out.stderr, runs.stdout):
        assert not find_secrets(text)


def test_dry_run_shows_masked_bodies_and_sends_nothing(tmp_path, sandbox):
    out = cli([str(sheet(tmp_path, 3)), "--dry-run", "--journal", str(tmp_path / "j.sqlite")], env_for(sandbox))
    assert out.returncode == 0
    assert '"sec_hash"' in out.stdout and '"password": "********"' in out.stdout
    assert not find_secrets(out.stdout + out.stderr)
    assert sandbox.ledger() == [] and not (tmp_path / "j.sqlite").exists()


def test_missing_credentials_is_one_line_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPAY_")}
    out = cli([str(sheet(tmp_path, 1)), "--yes"], env, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[0] == "mipay-bulk: MIPAY_USERNAME is not set"
    assert "Traceback" not in out.stderr


def test_bad_file_sends_nothing_exit_2(tmp_path, sandbox):
    bad = tmp_path / "p.xlsx"
    bad.write_bytes(b"%PDF-1.4")
    out = cli([str(bad), "--yes", "--journal", str(tmp_path / "j.sqlite")], env_for(sandbox))
    assert out.returncode == 2 and "PDF" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_dispatch_records_in_flight_and_exits_130(tmp_path, make_sandbox, sig):
    sb = make_sandbox(faults=Faults(latency=0.05))
    j = tmp_path / "j.sqlite"
    path = sheet(tmp_path, 400)
    proc = subprocess.Popen([sys.executable, "-m", "mipay_bulk", str(path), "--yes", "--journal", str(j),
                             "--quiet", "--rate", "50", "--concurrency", "4"], env=env_for(sb),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(sb.ledger()) < 20:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Resume with:" in stdout and "--resume" in stdout
    with Journal(j) as journal:
        run_id = journal.runs()["run_id"].iloc[0]
        counts = journal.counts(run_id)
        assert counts.get("in_flight", 0) == 0
        assert counts["accepted"] == len(sb.ledger())
    resumed = cli([str(path), "--yes", "--journal", str(j), "--quiet", "--resume", "--rate", "500",
                   "--concurrency", "8"], env_for(sb))
    assert resumed.returncode == 0, resumed.stderr
    assert len(sb.ledger()) == 400 and set(sb.paid_counts().values()) == {1}


def test_crash_test_sigkill_at_random_moments_then_resume(tmp_path, make_sandbox):
    """2,000 rows at 20 ms latency, killed with SIGKILL several times, resumed until done."""
    sb = make_sandbox(faults=Faults(latency=0.02))
    n = 2000
    path = mk.csv_file(tmp_path / "big.csv", [[m, 100 + i % 900, "B2C"] for i, m in enumerate(numbers(n))],
                       header=["Phone", "Amount", "Product"])
    j = tmp_path / "j.sqlite"
    rng = random.Random(2026)
    args = [sys.executable, "-m", "mipay_bulk", str(path), "--yes", "--journal", str(j), "--quiet",
            "--rate", "400", "--concurrency", "8"]
    kills = 0
    for round_no in range(12):
        cmd = args + (["--resume"] if round_no else [])
        proc = subprocess.Popen(cmd, env=env_for(sb), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 4:
            before = len(sb.ledger())
            # Kill at a random moment once sending is under way.
            deadline = time.time() + 60
            while len(sb.ledger()) == before and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
            if proc.poll() is None:
                proc.kill()
                kills += 1
        proc.wait(timeout=120)
        with Journal(j) as journal:
            run_id = journal.runs()["run_id"].iloc[0]
            counts = journal.counts(run_id)
        if proc.returncode in (0, 1) and not any(counts.get(s) for s in ("pending", "not_sent", "in_flight")):
            break
    assert kills >= 3
    with Journal(j) as journal:
        rows = journal.rows(run_id)
    assert set(rows["state"]) <= {"accepted", "rejected", "unknown"}
    paid = sb.paid_counts()
    assert max(paid.values()) == 1, "someone was paid twice"
    key = list(zip(rows["msisdn"], rows["amount"], strict=True))
    states = Counter(rows["state"])
    for k, state in zip(key, rows["state"], strict=True):
        if state == "accepted":
            assert paid[k] == 1
        elif state == "rejected":
            assert paid[k] == 0
    # Unknown rows are exactly the ones cut off in flight: the sandbox may or may not have paid them.
    unknown = [k for k, s in zip(key, rows["state"], strict=True) if s == "unknown"]
    assert len(unknown) <= kills * 8  # at most the requests in flight at each kill
    paid_rows = sum(1 for k in key if paid[k])
    assert paid_rows == states["accepted"] + sum(paid[k] for k in unknown)
    assert len(sb.ledger()) == paid_rows
