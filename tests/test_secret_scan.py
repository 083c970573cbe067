"""The scan itself must be able to fail; and the client's debug logging carries no secret."""

from __future__ import annotations

import logging

from .conftest import TEST_API_KEY, TEST_PASSWORD, find_secrets


def test_scanner_finds_each_secret():
    assert find_secrets(f"x {TEST_PASSWORD} y") == [TEST_PASSWORD]
    assert find_secrets(f"{TEST_API_KEY}") == [TEST_API_KEY]
    assert find_secrets("nothing here") == []


def test_debug_logs_of_a_real_call_hold_no_secret(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.remit(msisdn="254712345678", amount=100, product_id="B2C", scheduled_send="17/09/2030 6:31 pm")
    assert caplog.records  # urllib3 did log the request at DEBUG
    assert not find_secrets(caplog.text)
