"""Shared fixtures: a real sandbox gateway on loopback, and clients that talk HTTP to it."""

from __future__ import annotations

import base64

import pytest

from mipay_bulk import Faults, Sandbox

# Secrets of the suite's own; the secret-scan tests look for exactly these strings.
TEST_PASSWORD = "pw-Zq7!never-print-me"
TEST_API_KEY = base64.b64encode(b"suite-secret-key-never-print-me").decode()


@pytest.fixture
def sandbox():
    with Sandbox(password=TEST_PASSWORD, api_key=TEST_API_KEY) as sb:
        yield sb


@pytest.fixture
def make_sandbox():
    """Start sandboxes with given faults; all are stopped at the end of the test."""
    started: list[Sandbox] = []

    def make(**kwargs) -> Sandbox:
        faults = kwargs.pop("faults", None)
        sb = Sandbox(password=TEST_PASSWORD, api_key=TEST_API_KEY, faults=faults or Faults(), **kwargs)
        started.append(sb.start())
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def client(sandbox):
    with sandbox.client(timeout=(2.0, 5.0)) as c:
        yield c


# ---------------------------------------------------------------- the secret scan
# Every test's captured stdout, stderr and log records (at DEBUG, urllib3's included) are
# scanned for the suite's password and API key; a hit fails the whole session.

SECRETS = (TEST_PASSWORD, TEST_API_KEY)
_leaks: list[str] = []


def find_secrets(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def pytest_runtest_logreport(report):
    texts = [content for _, content in report.sections]
    if report.longrepr is not None and report.passed:
        texts.append(str(report.longrepr))
    for text in texts:
        if find_secrets(text):
            _leaks.append(f"{report.nodeid} ({report.when})")


def pytest_sessionfinish(session, exitstatus):
    if _leaks:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "SECRET LEAK: the suite's password or API key appeared in captured output of: " + ", ".join(_leaks),
            red=True,
        )
        session.exitstatus = 1
