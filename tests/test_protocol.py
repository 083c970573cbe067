"""The wire contract of PROTOCOL.md: vectors, canonical string, schedule form, outcome table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipay_bulk import protocol
from mipay_bulk.protocol import OutcomeClass

VECTOR_KEY = "bWlwYXktc2FuZGJveC1zaGFyZWQtc2VjcmV0"


def test_vector_1_remit():
    body = {
        "CHID": 13, "gateway_host": "gomipay.com", "lat": "0.0", "lng": "0.0",
        "timestamp": 1789652460, "ip_address": "197.248.10.20",
        "MSISDN": "254712345678", "amount": 1500, "product_id": "B2C",
        "scheduled_send": "17/09/2026 6:31 pm",
        "credentials": {"username": "analyst", "password": "s3cret"},
    }
    assert protocol.canonical_string(body) == (
        "chid=13&gateway_host=gomipay.com&lat=0.0&lng=0.0&timestamp=1789652460"
        "&ip_address=197.248.10.20&msisdn=254712345678&amount=1500&product_id=B2C"
        "&scheduled_send=17/09/2026 6:31 pm"
    )
    assert protocol.sign(body, VECTOR_KEY) == "MP2L2X4W06F4aJlyMgVtYplLcvKUSqCylT6Q9T13Clo="


def test_vector_2_order():
    body = {
        "CHID": 13, "gateway_host": "gomipay.com", "lat": "0.0", "lng": "0.0",
        "timestamp": 1789700000, "ip_address": "2001:db8::7", "MSISDN": "254110123456",
        "cart_items": [{"product_item_id": 100213, "quantity": 2}, {"product_item_id": 100214, "quantity": 1}],
        "credentials": {"username": "analyst", "password": "s3cret"},
    }
    assert protocol.canonical_string(body) == (
        "chid=13&gateway_host=gomipay.com&lat=0.0&lng=0.0&timestamp=1789700000&ip_address=2001:db8::7"
        '&msisdn=254110123456&cart_items=[{"product_item_id":100213,"quantity":2},'
        '{"product_item_id":100214,"quantity":1}]'
    )
    assert protocol.sign(body, VECTOR_KEY) == "YWYYcAaezELqLsNmNFRRLqradatCUn6aPZyHB0K6+fM="


def test_build_body_matches_vector_1_and_orders_keys():
    body = protocol.build_body(
        "REMIT",
        {"scheduled_send": "17/09/2026 6:31 pm", "MSISDN": "254712345678", "amount": 1500, "product_id": "B2C"},
        timestamp=1789652460, ip_address="197.248.10.20", username="analyst", password="s3cret",
        api_key=VECTOR_KEY,
    )
    assert list(body) == [
        "CHID", "gateway_host", "lat", "lng", "timestamp", "ip_address",
        "MSISDN", "amount", "product_id", "scheduled_send", "credentials", "sec_hash",
    ]
    assert body["sec_hash"] == "MP2L2X4W06F4aJlyMgVtYplLcvKUSqCylT6Q9T13Clo="
    assert protocol.verify(body, VECTOR_KEY)


def test_build_body_refuses_missing_or_unknown_params():
    with pytest.raises(ValueError, match="missing"):
        protocol.build_body("SALE", {"MSISDN": "254712345678"}, timestamp=1, ip_address="1.2.3.4",
                            username="u", password="p", api_key=VECTOR_KEY)


def test_value_rendering_of_null_and_booleans():
    assert protocol.canonical_string({"A": None, "B": True, "C": False, "sec_hash": "x"}) == "a=&b=true&c=false"


def test_verify_rejects_tampering_and_missing_hash():
    body = protocol.build_body("CHECKOUT", {"reference": "SA1", "MSISDN": "254712345678"}, timestamp=5,
                               ip_address="::1", username="u", password="p", api_key=VECTOR_KEY)
    assert protocol.verify(body, VECTOR_KEY)
    assert not protocol.verify({**body, "reference": "SA2"}, VECTOR_KEY)
    assert not protocol.verify({k: v for k, v in body.items() if k != "sec_hash"}, VECTOR_KEY)
    # The password is not signed: changing it does not change the hash (the gateway checks it apart).
    assert protocol.verify({**body, "credentials": {"username": "u", "password": "other"}}, VECTOR_KEY)


def test_api_key_must_be_base64():
    with pytest.raises(ValueError):
        protocol.decode_api_key("not base64!!")


@pytest.mark.parametrize(
    "when, text",
    [
        (datetime(2016, 9, 17, 6, 31), "17/09/2016 6:31 am"),
        (datetime(2027, 1, 1, 0, 5), "01/01/2027 12:05 am"),
        (datetime(2027, 2, 3, 12, 0), "03/02/2027 12:00 pm"),
        (datetime(2026, 9, 17, 18, 31), "17/09/2026 6:31 pm"),
        # An aware time is converted to Nairobi (UTC+3).
        (datetime(2026, 9, 17, 15, 31, tzinfo=UTC), "17/09/2026 6:31 pm"),
        (datetime(2026, 12, 31, 21, 0, tzinfo=UTC), "01/01/2027 12:00 am"),
    ],
)
def test_format_scheduled_send(when, text):
    assert protocol.format_scheduled_send(when) == text


@pytest.mark.parametrize("bad", ["17/09/2016 06:31 am", "17/09/2016 6:31 AM", "17/9/2016 6:31 am",
                                 "17/09/2016 13:31 pm", "17/09/2016 0:31 am", "17/09/2016 6:31am"])
def test_parse_scheduled_send_is_strict(bad):
    with pytest.raises(ValueError):
        protocol.parse_scheduled_send(bad)


@given(st.integers(min_value=0, max_value=366 * 24 * 60 - 1))
def test_schedule_round_trips_every_minute_of_a_year(minute):
    when = datetime(2028, 1, 1, tzinfo=protocol.NAIROBI) + timedelta(minutes=minute)
    assert protocol.parse_scheduled_send(protocol.format_scheduled_send(when)) == when


def test_schedule_round_trips_midnight_and_noon_exactly():
    for hour in (0, 12):
        when = datetime(2027, 3, 4, hour, 0, tzinfo=protocol.NAIROBI)
        assert protocol.parse_scheduled_send(protocol.format_scheduled_send(when)) == when


@pytest.mark.parametrize(
    "status, payload, expected",
    [
        (200, {"response_status": "00", "response": "ok"}, OutcomeClass.ACCEPTED),
        (201, {"response_status": "00", "response": "ok", "reference": "x"}, OutcomeClass.ACCEPTED),
        (200, {"response_status": "05", "response": "bad"}, OutcomeClass.REJECTED),
        (200, {"response_status": 0, "response": "number, not string"}, OutcomeClass.UNKNOWN),
        (200, {"response": "no status"}, OutcomeClass.UNKNOWN),
        (200, None, OutcomeClass.UNKNOWN),
        (200, ["a", "list"], OutcomeClass.UNKNOWN),
        (429, None, OutcomeClass.THROTTLED),
        (500, {"response_status": "00", "response": "ok"}, OutcomeClass.UNKNOWN),
        (503, None, OutcomeClass.UNKNOWN),
        (404, None, OutcomeClass.REJECTED),
        (301, None, OutcomeClass.REJECTED),
    ],
)
def test_classify_answer_follows_the_table(status, payload, expected):
    assert protocol.classify_answer(status, payload) is expected


def test_only_not_sent_and_throttled_are_retryable():
    assert {c for c in OutcomeClass if c.retryable} == {OutcomeClass.NOT_SENT, OutcomeClass.THROTTLED}
