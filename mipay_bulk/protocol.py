"""The MIPAY wire contract, as ``shared/PROTOCOL.md`` reads the gateway's document.

Every **(reading)** of that page lives here and nowhere else: the key order of a body, the
canonical string that is signed, ``sec_hash``, the ``scheduled_send`` form, and what an
attempt's result means for money (:class:`OutcomeClass`). The client signs with this module
and the sandbox verifies with it, so the two can never drift apart; the test vectors of
PROTOCOL.md pin it from outside.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

CHID = 13
GATEWAY_HOST = "gomipay.com"
LAT = "0.0"
LNG = "0.0"
DEFAULT_GATEWAY_URL = "https://gomipay.com"
NAIROBI = ZoneInfo("Africa/Nairobi")

#: Each service: its default path (ending in a slash, as the document insists) and its
#: parameters in the order they stand in the body, which is the order that is signed.
SERVICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "REMIT": ("/api/REMIT/", ("MSISDN", "amount", "product_id", "scheduled_send")),
    # (reading) the document describes SALE, ORDER and CHECKOUT without naming paths.
    "SALE": ("/api/SALE/", ("product_item_id", "MSISDN", "amount")),
    "ORDER": ("/api/ORDER/", ("MSISDN", "cart_items")),
    "CHECKOUT": ("/api/CHECKOUT/", ("reference", "MSISDN")),
}
PRODUCTS = ("B2C", "B2B")

# Keys that are part of a body but never signed.
UNSIGNED_KEYS = frozenset({"sec_hash", "credentials"})
#: The keys every body starts with, in order.
HEADER_KEYS = ("CHID", "gateway_host", "lat", "lng", "timestamp", "ip_address")


def decode_api_key(api_key: str) -> bytes:
    """The HMAC secret: the base64-decoded API key. Raises ``ValueError`` if it is not base64."""
    try:
        secret = base64.b64decode(api_key.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the API key is not valid base64") from exc
    if not secret:
        raise ValueError("the API key is empty")
    return secret


def build_body(
    service: str,
    params: Mapping[str, Any],
    *,
    timestamp: int,
    ip_address: str,
    username: str,
    password: str,
    api_key: str,
) -> dict[str, Any]:
    """A signed body for ``service`` in PROTOCOL.md's key order, ``sec_hash`` last."""
    _, names = SERVICES[service]
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in names]
    if missing or extra:
        raise ValueError(f"{service} takes {', '.join(names)}; missing {missing}, unexpected {extra}")
    body: dict[str, Any] = {
        "CHID": CHID,
        "gateway_host": GATEWAY_HOST,
        "lat": LAT,
        "lng": LNG,
        "timestamp": int(timestamp),
        "ip_address": ip_address,
    }
    for name in names:
        body[name] = params[name]
    body["credentials"] = {"username": username, "password": password}
    body["sec_hash"] = sign(body, api_key)
    return body


def _text(value: Any) -> str:
    # (reading) how a JSON value becomes text in the signed string.
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def canonical_string(body: Mapping[str, Any]) -> str:
    """``key=value&...`` of the signed keys in body order, keys lower-cased, no URL-encoding."""
    return "&".join(f"{k.lower()}={_text(v)}" for k, v in body.items() if k not in UNSIGNED_KEYS)


def sign(body: Mapping[str, Any], api_key: str) -> str:
    """``sec_hash``: base64 of HMAC-SHA256 over the canonical string, keyed by the decoded API key."""
    digest = hmac.new(decode_api_key(api_key), canonical_string(body).encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def verify(body: Mapping[str, Any], api_key: str) -> bool:
    """True if ``body['sec_hash']`` matches the body as received, compared in constant time."""
    given = body.get("sec_hash")
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8"), sign(body, api_key).encode("utf-8"))


# ---------------------------------------------------------------- scheduled_send

_SCHEDULE_RE = re.compile(r"^(\d{2})/(\d{2})/(\d{4}) ([1-9]|1[0-2]):([0-5]\d) (am|pm)$")


def format_scheduled_send(when: datetime) -> str:
    """``DD/MM/YYYY H:MM am`` in Nairobi time. A naive datetime is taken as Nairobi time already."""
    local = when.astimezone(NAIROBI) if when.tzinfo is not None else when
    hour12 = local.hour % 12 or 12
    return f"{local:%d/%m/%Y} {hour12}:{local:%M} {'am' if local.hour < 12 else 'pm'}"


def parse_scheduled_send(text: str) -> datetime:
    """The aware Nairobi datetime a ``scheduled_send`` string names; ``ValueError`` if it is not that form."""
    m = _SCHEDULE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not of the form 'DD/MM/YYYY H:MM am'")
    day, month, year, hour, minute, half = m.groups()
    hour24 = int(hour) % 12 + (12 if half == "pm" else 0)
    return datetime(int(year), int(month), int(day), hour24, int(minute), tzinfo=NAIROBI)


# ---------------------------------------------------------------- outcomes


class OutcomeClass(StrEnum):
    """What an attempt means for money (PROTOCOL.md, "What an attempt's outcome means")."""

    ACCEPTED = "accepted"  # done
    REJECTED = "rejected"  # final: the analyst fixes and re-runs
    NOT_SENT = "not_sent"  # never reached the gateway: may be retried
    THROTTLED = "throttled"  # HTTP 429: may be retried after Retry-After
    UNKNOWN = "unknown"  # may have reached the gateway: never re-sent by the kit itself

    @property
    def retryable(self) -> bool:
        return self in (OutcomeClass.NOT_SENT, OutcomeClass.THROTTLED)


def classify_answer(http_status: int, payload: Any) -> OutcomeClass:
    """Classify an HTTP answer. ``payload`` is the decoded JSON, or ``None`` if the body was not JSON.

    Beyond PROTOCOL.md's table, two (readings) of this module:

    * a 4xx other than 429 is ``rejected``: the server refused the request as it stood, so
      nothing was paid, and sending it unchanged again would be refused again;
    * a 3xx is ``rejected`` too (redirects are never followed for a POST): the server answered
      without acting, which almost always means a wrong gateway URL.
    """
    if http_status == 429:
        return OutcomeClass.THROTTLED
    if 200 <= http_status < 300:
        if (
            isinstance(payload, dict)
            and isinstance(payload.get("response_status"), str)
            and "response" in payload
        ):
            return OutcomeClass.ACCEPTED if payload["response_status"] == "00" else OutcomeClass.REJECTED
        return OutcomeClass.UNKNOWN
    if 300 <= http_status < 500:
        return OutcomeClass.REJECTED
    return OutcomeClass.UNKNOWN


def classify_transport_error(exc: BaseException) -> OutcomeClass:
    """Classify an exception from ``requests``: did the request possibly leave?

    Only failures that happen before a byte of the request could have been read by the
    gateway are ``not_sent``: name lookup, refused connection, connect timeout, TLS
    handshake. Everything else (read timeout, a connection dropped after sending, an error
    we do not recognise) is ``unknown``, because money may have moved.
    """
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return OutcomeClass.NOT_SENT
    if isinstance(exc, requests.exceptions.SSLError):
        return OutcomeClass.NOT_SENT
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return OutcomeClass.UNKNOWN
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        # NameResolutionError is a NewConnectionError: both fail before anything is sent.
        if isinstance(reason, NewConnectionError):
            return OutcomeClass.NOT_SENT
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return OutcomeClass.NOT_SENT
    return OutcomeClass.UNKNOWN
