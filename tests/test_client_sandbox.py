"""The client and the sandbox over real HTTP on loopback."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mipay_bulk import ConfigurationError, Faults, MipayClient, OutcomeClass, protocol
from mipay_bulk.errors import CouldNotSend, GatewayRejected, OutcomeUnknown

from .conftest import TEST_API_KEY, TEST_PASSWORD

WHEN = "17/09/2030 6:31 pm"


def remit(client, msisdn="254712345678", amount=1500, product="B2C"):
    return client.remit(msisdn=msisdn, amount=amount, product_id=product, scheduled_send=WHEN)


def test_remit_is_accepted_and_recorded(client, sandbox):
    out = remit(client)
    assert out.outcome is OutcomeClass.ACCEPTED and out.accepted
    assert out.http_status == 200 and out.response_status == "00"
    assert out.extra["transaction_id"].startswith("SB")
    assert out.elapsed > 0
    ledger = sandbox.ledger()
    assert [(e["msisdn"], e["amount"], e["product_id"]) for e in ledger] == [("254712345678", 1500, "B2C")]
    # The same ledger over HTTP, on a path outside /api/.
    assert requests.get(sandbox.url + "/_sandbox/ledger", timeout=5).json() == ledger


def test_b2b_short_code_is_accepted(client):
    assert remit(client, msisdn="600123", amount=50_000, product="B2B").accepted


def test_sale_order_checkout_and_reused_reference(client, sandbox):
    sale = client.sale(product_item_id=100213, msisdn="254712345678", amount=250)
    assert sale.accepted and sale.extra["reference"]
    order = client.order(cart_items=[{"product_item_id": 100213, "quantity": 2},
                                     {"product_item_id": 100214, "quantity": 1}], msisdn="254110123456")
    assert order.accepted and order.extra["amount"] == 2 * 250 + 1200
    for ref, who in ((sale.extra["reference"], "254712345678"), (order.extra["reference"], "254110123456")):
        paid = client.checkout(reference=ref, msisdn=who)
        assert paid.accepted
        again = client.checkout(reference=ref, msisdn=who)
        assert again.outcome is OutcomeClass.REJECTED and again.response_status == "09"
    assert [(e["service"], e["amount"]) for e in sandbox.ledger()] == [("CHECKOUT", 250), ("CHECKOUT", 1700)]


def test_unknown_product_item_is_rejected(client):
    assert client.sale(product_item_id=1, msisdn="254712345678", amount=5).response_status == "10"


def _post(sandbox, body, path="/api/REMIT/", **kw):
    return requests.post(sandbox.url + path, data=json.dumps(body), timeout=5,
                         headers={"Content-Type": "application/json"}, **kw)


def test_tampered_body_is_refused(client, sandbox):
    body = client.signed_body("REMIT", {"MSISDN": "254712345678", "amount": 100, "product_id": "B2C",
                                        "scheduled_send": WHEN})
    body["amount"] = 100000
    answer = _post(sandbox, body).json()
    assert answer["response_status"] == "02"
    assert sandbox.ledger() == []


def test_wrong_password_and_stale_timestamp_and_missing_field(sandbox):
    wrong = MipayClient(sandbox.url, username="sandbox", password="nope", api_key=TEST_API_KEY,
                        ip_address="127.0.0.1")
    assert remit(wrong).response_status == "01"
    stale = sandbox.client(clock=lambda: time.time() - 301)
    assert remit(stale).response_status == "03"
    fresh = sandbox.client(clock=lambda: time.time() + 200)
    assert remit(fresh).accepted
    body = sandbox.client().signed_body("CHECKOUT", {"reference": "x", "MSISDN": "254712345678"})
    del body["reference"]
    answer = _post(sandbox, body, path="/api/CHECKOUT/").json()
    assert answer["response_status"] == "04" and "reference" in answer["response"]


@pytest.mark.parametrize(
    "msisdn, amount, product, when, code",
    [
        ("0712345678", 100, "B2C", WHEN, "05"),
        ("254712345678", 0, "B2C", WHEN, "06"),
        ("254712345678", 10.5, "B2C", WHEN, "06"),
        ("254712345678", 300_000, "B2C", WHEN, "06"),
        ("254712345678", 100, "C2C", WHEN, "07"),
        ("254712345678", 100, "B2C", "2030-09-17 18:31", "08"),
        ("254700000001", 100, "B2C", WHEN, "11"),
        ("254700000004", 100, "B2C", WHEN, "14"),
    ],
)
def test_remit_fields_are_validated(client, sandbox, msisdn, amount, product, when, code):
    out = client.remit(msisdn=msisdn, amount=amount, product_id=product, scheduled_send=when)
    assert (out.outcome, out.response_status) == (OutcomeClass.REJECTED, code)
    assert out.response  # a message an analyst can read
    assert sandbox.ledger() == []


def test_paths_need_the_slash_post_and_json(sandbox, client):
    body = client.signed_body("REMIT", {"MSISDN": "254712345678", "amount": 100, "product_id": "B2C",
                                        "scheduled_send": WHEN})
    no_slash = _post(sandbox, body, path="/api/REMIT")
    assert no_slash.status_code == 404 and "text/html" in no_slash.headers["Content-Type"]
    assert requests.get(sandbox.url + "/api/REMIT/", timeout=5).status_code == 405
    form = requests.post(sandbox.url + "/api/REMIT/", data="a=b", timeout=5,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    # And the client's view of a path without its slash: refused, final, nothing paid.
    bad = sandbox.client(paths={"REMIT": "/api/REMIT"})
    assert bad.paths["REMIT"] == "/api/REMIT/"  # the client adds the slash the document requires
    assert sandbox.ledger() == []


@pytest.mark.parametrize(
    "fault, expected, paid",
    [
        ("timeout", OutcomeClass.UNKNOWN, True),
        ("drop", OutcomeClass.UNKNOWN, True),
        ("http500", OutcomeClass.UNKNOWN, True),
        ("html", OutcomeClass.UNKNOWN, True),
        ("http503", OutcomeClass.UNKNOWN, False),
        ("throttle", OutcomeClass.THROTTLED, False),
    ],
)
def test_each_fault_gives_the_protocol_outcome(sandbox, fault, expected, paid):
    client = sandbox.client(timeout=(1.0, 0.5))
    sandbox.script(fault)
    out = remit(client)
    assert out.outcome is expected
    assert (len(sandbox.ledger()) == 1) is paid
    if fault == "throttle":
        assert out.retry_after == 1.0
    # The next request is answered normally again.
    assert remit(client, amount=99).accepted


def test_timeout_after_ledger_write_is_unknown_never_accepted(sandbox):
    sandbox.script("timeout")
    out = remit(sandbox.client(timeout=(1.0, 0.3)))
    assert out.outcome is OutcomeClass.UNKNOWN and "ReadTimeout" in out.error
    assert sandbox.paid_counts()[("254712345678", 1500)] == 1


def test_reserved_drop_number_is_paid_but_unknown(client, sandbox):
    out = remit(client, msisdn="254700000009")
    assert out.outcome is OutcomeClass.UNKNOWN
    assert sandbox.paid_counts()[("254700000009", 1500)] == 1


def test_connection_refused_is_not_sent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = MipayClient(f"http://127.0.0.1:{port}", username="u", password="p", api_key=TEST_API_KEY,
                    ip_address="127.0.0.1", timeout=(1, 1))
    out = remit(c)
    assert out.outcome is OutcomeClass.NOT_SENT
    with pytest.raises(CouldNotSend):
        out.raise_for_outcome()


def test_unresolvable_host_is_not_sent():
    c = MipayClient("http://no-such-host.invalid", username="u", password="p", api_key=TEST_API_KEY,
                    ip_address="127.0.0.1", timeout=(1, 1))
    assert remit(c).outcome is OutcomeClass.NOT_SENT


def test_seeded_faults_are_reproducible(make_sandbox):
    def run() -> list[str]:
        sb = make_sandbox(faults=Faults(drop_share=0.2, http503_share=0.2, throttle_share=0.1, seed=7))
        c = sb.client(timeout=(1, 2))
        return [str(remit(c, amount=100 + i).outcome) for i in range(30)]

    first, second = run(), run()
    assert first == second
    assert {"accepted", "unknown", "throttled"} <= set(first)


def test_rate_limit_answers_429_with_retry_after(make_sandbox):
    sb = make_sandbox(faults=Faults(rate_limit=5, retry_after=2))
    c = sb.client()
    outs = [remit(c, amount=100 + i) for i in range(12)]
    throttled = [o for o in outs if o.outcome is OutcomeClass.THROTTLED]
    assert throttled and all(o.retry_after == 2 for o in throttled)
    assert len(sb.ledger()) == 12 - len(throttled)


def test_raise_for_outcome(client):
    assert remit(client).raise_for_outcome().accepted
    with pytest.raises(GatewayRejected):
        remit(client, msisdn="254700000002").raise_for_outcome()
    with pytest.raises(OutcomeUnknown):
        remit(client, msisdn="254700000009").raise_for_outcome()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"api_key": "@@not-base64@@"}, "base64"),
        ({"username": "  "}, "username"),
        ({"base_url": "ftp://gomipay.com"}, "http"),
        ({"base_url": "gomipay.com"}, "http"),
        ({"ip_address": "999.1.1.1"}, "IP address"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs, match):
    args = {"base_url": "https://gomipay.com", "username": "u", "password": "p",
            "api_key": TEST_API_KEY, "ip_address": "197.248.10.20", **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        MipayClient(args.pop("base_url"), **args)


def test_reprs_show_no_secret(client):
    out = remit(client)
    for text in (repr(client), str(client), repr(out), repr(client.masked_body("REMIT", {
            "MSISDN": "254712345678", "amount": 1, "product_id": "B2C", "scheduled_send": WHEN}))):
        assert TEST_PASSWORD not in text and TEST_API_KEY not in text


_msisdn = st.from_regex(r"2547[0-9]{8}", fullmatch=True)
_when = st.datetimes(min_value=__import__("datetime").datetime(2026, 1, 1),
                     max_value=__import__("datetime").datetime(2035, 1, 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msisdn=_msisdn, amount=st.integers(10, 250_000), when=_when, data=st.data())
def test_property_every_signed_body_verifies_and_any_change_breaks_it(sandbox, msisdn, amount, when, data):
    client = sandbox.client()
    params = {"MSISDN": msisdn, "amount": amount, "product_id": "B2C",
              "scheduled_send": protocol.format_scheduled_send(when)}
    body = client.signed_body("REMIT", params)
    assert protocol.verify(body, TEST_API_KEY)
    # One changed character in one signed field breaks the signature.
    field = data.draw(st.sampled_from(["MSISDN", "amount", "scheduled_send", "ip_address", "timestamp",
                                       "gateway_host", "lat"]))
    text = str(body[field])
    pos = data.draw(st.integers(0, len(text) - 1))
    new_char = data.draw(st.characters(min_codepoint=32, max_codepoint=126).filter(lambda c: c != text[pos]))
    changed = text[:pos] + new_char + text[pos + 1:]
    tampered = {**body, field: int(changed) if isinstance(body[field], int) and changed.isdigit() else changed}
    if protocol.canonical_string(tampered) != protocol.canonical_string(body):
        assert not protocol.verify(tampered, TEST_API_KEY)


def test_sandbox_refuses_over_http_what_the_property_breaks(sandbox, client):
    body = client.signed_body("REMIT", {"MSISDN": "254712345678", "amount": 100, "product_id": "B2C",
                                        "scheduled_send": WHEN})
    assert _post(sandbox, body).json()["response_status"] == "00"
    body2 = client.signed_body("REMIT", {"MSISDN": "254712345678", "amount": 100, "product_id": "B2C",
                                         "scheduled_send": WHEN})
    body2["MSISDN"] = "254712345679"
    assert _post(sandbox, body2).json()["response_status"] == "02"


def test_outcome_renders_as_a_table_in_notebooks(client):
    out = remit(client)
    page = out._repr_html_()
    assert "<table>" in page and "accepted" in page and out.extra["transaction_id"] in page
    assert TEST_PASSWORD not in page
