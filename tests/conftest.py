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
