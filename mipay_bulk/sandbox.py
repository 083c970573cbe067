"""The sandbox gateway: a real HTTP server on loopback that answers like MIPAY.

It verifies every request with the same :mod:`mipay_bulk.protocol` code the client signs
with, validates REMIT fields as the gateway would, keeps a ledger of every payment it made
(read it with :meth:`Sandbox.ledger` or ``GET /_sandbox/ledger``), and injects seeded
faults on request. Its non-``00`` codes are its own (see ``CODES`` and the README) and say
nothing about the real gateway's.

In-process::

    with Sandbox() as sb:                   # a free port on 127.0.0.1
        client = sb.client()
        client.remit(msisdn="254712345678", amount=100, product_id="B2C", scheduled_send="...")
        assert len(sb.ledger()) == 1

As its own process: ``python -m mipay_bulk sandbox --port 8642``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import protocol

SANDBOX_USERNAME = "sandbox"
SANDBOX_PASSWORD = "sandbox-password"  # noqa: S105 (public, documented sandbox credential)
#: The PROTOCOL.md test-vector key: base64 of ``mipay-sandbox-shared-secret``.
SANDBOX_API_KEY = base64.b64encode(b"mipay-sandbox-shared-secret").decode()
MAX_CLOCK_SKEW = 300  # seconds a timestamp may be off before it is stale

CODES = {
    "00": "Request accepted for processing",
    "01": "Authentication failed: the username or password is wrong",
    "02": "The sec_hash does not match the request",
    "03": "The timestamp is more than 5 minutes away from the gateway's time",
    "04": "A field is missing or malformed",
    "05": "The MSISDN is not a valid recipient for this product",
    "06": "The amount must be a whole number of shillings within the product's limits",
    "07": "The product_id must be B2C or B2B",
    "08": "The scheduled_send is not of the form DD/MM/YYYY H:MM am",
    "09": "The reference is unknown or has already been used",
    "10": "The product item or cart is not known",
    "11": "The recipient is not a registered M-PESA customer",
    "12": "The recipient's M-PESA account is locked",
    "13": "The payment would exceed the recipient's account balance limit",
    "14": "Insufficient funds in the organisation's utility account",
}

#: Reserved recipients that the sandbox always answers the same way (for samples and tests).
TEST_NUMBERS: dict[str, str] = {
    "254700000001": "11",
    "254700000002": "12",
    "254700000003": "13",
    "254700000004": "14",
    "254700000009": "drop",  # paid, then the connection is dropped: the kit must say unknown
}
#: Product items a SALE may name, and their unit prices in shillings.
PRODUCT_ITEMS = {100213: 250, 100214: 1200, 100215: 45}

_B2C_MSISDN = re.compile(r"^254(7\d{8}|1\d{8})$")
_SHORTCODE = re.compile(r"^\d{5,7}$")
FAULTS = ("timeout", "drop", "http500", "http503", "html", "throttle")


@dataclass
class Faults:
    """Seeded fault injection. Shares are probabilities per request, drawn from ``seed``.

    ``timeout``, ``drop``, ``http500`` and ``html`` happen **after** the request was
    processed and recorded (the payment happened; the caller cannot know), ``http503`` and
    ``throttle`` before anything was done. ``rate_limit`` (requests/second, a token bucket
    with one second of burst) answers 429 with ``Retry-After`` above that rate.
    """

    latency: float = 0.0
    timeout_share: float = 0.0
    drop_share: float = 0.0
    http500_share: float = 0.0
    http503_share: float = 0.0
    html_share: float = 0.0
    throttle_share: float = 0.0
    rate_limit: float | None = None
    retry_after: float = 1.0
    hang: float = 60.0  # how long a "timeout" answer is held back
    seed: int = 0

    def draw(self, key: str) -> str | None:
        """The fault for the request identified by ``key``: the same key always draws the same."""
        shares = [
            ("timeout", self.timeout_share),
            ("drop", self.drop_share),
            ("http500", self.http500_share),
            ("http503", self.http503_share),
            ("html", self.html_share),
            ("throttle", self.throttle_share),
        ]
        if not any(share for _, share in shares):
            return None
        seed = int.from_bytes(hashlib.sha256(f"{self.seed}|{key}".encode()).digest()[:8], "big")
        x = random.Random(seed).random()
        for name, share in shares:
            if x < share:
                return name
            x -= share
        return None


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sandbox: Sandbox


class Sandbox:
    """A stand-in MIPAY gateway on loopback. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str = SANDBOX_USERNAME,
        password: str = SANDBOX_PASSWORD,
        api_key: str = SANDBOX_API_KEY,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] | None = None,
    ) -> None:
        protocol.decode_api_key(api_key)
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self._api_key = api_key
        self.faults = faults or Faults()
        self.clock = clock
        self.log = log
        self._lock = threading.Lock()
        self._ledger: list[dict[str, Any]] = []
        self._references: dict[str, dict[str, Any]] = {}
        self._seen: Counter[str] = Counter()
        self._script: deque[str | None] = deque()
        self._stopping = threading.Event()
        self._bucket = _Bucket(self.faults.rate_limit) if self.faults.rate_limit else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Sandbox(url={self.url if self._server else None!r}, username={self.username!r})"

    # -- life cycle -----------------------------------------------------------------

    def _bind(self) -> _Server:
        server = _Server((self.host, self.port), _Handler)
        server.sandbox = self
        self.port = server.server_address[1]
        self._server = server
        return server

    def start(self) -> Sandbox:
        server = self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="mipay-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the CLI's ``sandbox`` command)."""
        server = self._server or self._bind()
        try:
            server.serve_forever()
        finally:
            self._stopping.set()
            server.server_close()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def client(self, **kwargs: Any):
        """A :class:`~mipay_bulk.client.MipayClient` with this sandbox's credentials."""
        from .client import MipayClient

        kwargs.setdefault("ip_address", "127.0.0.1")
        return MipayClient(
            self.url, username=self.username, password=self._password, api_key=self._api_key, **kwargs
        )

    def settings(self, **changes: Any):
        """:class:`~mipay_bulk.config.Settings` pointing at this sandbox."""
        from .config import Settings

        return Settings(
            gateway_url=self.url,
            username=self.username,
            password=self._password,
            api_key=self._api_key,
            ip_address="127.0.0.1",
            **changes,
        )

    # -- what tests read and steer ----------------------------------------------------

    def ledger(self) -> list[dict[str, Any]]:
        """Every payment the sandbox made, in order (REMIT payouts and CHECKOUT payments)."""
        with self._lock:
            return [dict(e) for e in self._ledger]

    def paid_counts(self) -> Counter[tuple[str, int]]:
        """How many REMIT payments each (MSISDN, amount) received."""
        return Counter((e["msisdn"], e["amount"]) for e in self.ledger() if e["service"] == "REMIT")

    def write_statement(self, path, **options: Any):
        """Write this sandbox's ledger as an M-PESA organisation statement export (csv or xlsx).

        Options as :func:`mipay_bulk.statement.write_statement`: ``mask_share``, ``charges``,
        ``seed``, ``period_end``.
        """
        from .statement import write_statement

        return write_statement(self.ledger(), path, **options)

    def script(self, *steps: str | dict[str, Any] | None) -> None:
        """Steer the next requests, in order: a fault name, ``None`` for a normal answer, or a
        dict, which is answered as it is (HTTP 200, JSON) instead of processing the request."""
        for f in steps:
            if f is not None and not isinstance(f, dict) and f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; choose from {FAULTS}")
        with self._lock:
            self._script.extend(steps)

    def _next_fault(self, key: str) -> str | dict[str, Any] | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
            self._seen[key] += 1
            n = self._seen[key]
        if self._bucket is not None and not self._bucket.take():
            return "throttle"
        return self.faults.draw(f"{key}#{n}")

    # -- the gateway itself ---------------------------------------------------------

    def handle(self, service: str, body: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Process one decoded body: the answer, and the ledger entry if money moved."""

        def no(code: str, detail: str | None = None) -> tuple[dict[str, Any], None]:
            msg = CODES[code] if detail is None else f"{CODES[code]}: {detail}"
            return {"response_status": code, "response": msg}, None

        if not isinstance(body, dict):
            return no("04", "the body is not a JSON object")
        _, names = protocol.SERVICES[service]
        for key in (*protocol.HEADER_KEYS, *names, "credentials", "sec_hash"):
            if key not in body:
                return no("04", f"{key} is missing")
        creds = body["credentials"]
        if not isinstance(creds, dict) or not isinstance(creds.get("username"), str):
            return no("04", "credentials must hold username and password")
        if creds.get("username") != self.username or creds.get("password") != self._password:
            return no("01")
        if not protocol.verify(body, self._api_key):
            return no("02")
        if body["CHID"] != protocol.CHID or body["gateway_host"] != protocol.GATEWAY_HOST:
            return no("04", "CHID and gateway_host must be the documented constants")
        ts = body["timestamp"]
        if not isinstance(ts, int) or isinstance(ts, bool):
            return no("04", "timestamp must be a whole number of seconds")
        if abs(self.clock() - ts) > MAX_CLOCK_SKEW:
            return no("03")
        try:
            import ipaddress

            ipaddress.ip_address(str(body["ip_address"]))
        except ValueError:
            return no("04", "ip_address is not an IPv4 or IPv6 address")
        return getattr(self, f"_{service.lower()}")(body, no)

    def _record(self, service: str, **entry: Any) -> dict[str, Any]:
        with self._lock:
            row = {
                "seq": len(self._ledger) + 1,
                "transaction_id": "SB" + uuid.uuid4().hex[:10].upper(),
                "service": service,
                "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                **entry,
            }
            self._ledger.append(row)
        return row

    def _remit(self, body: dict[str, Any], no):
        msisdn, amount, product = body["MSISDN"], body["amount"], body["product_id"]
        if product not in protocol.PRODUCTS:
            return no("07")
        if not isinstance(msisdn, str) or not (_SHORTCODE if product == "B2B" else _B2C_MSISDN).match(msisdn):
            return no("05", f"{msisdn!r}")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return no("06", f"{amount!r}")
        if product == "B2C" and not 10 <= amount <= 250_000:
            return no("06", f"KES {amount:,} is outside KES 10 to KES 250,000")
        try:
            protocol.parse_scheduled_send(str(body["scheduled_send"]))
        except ValueError:
            return no("08", f"{body['scheduled_send']!r}")
        special = TEST_NUMBERS.get(msisdn)
        if special and special != "drop":
            return no(special)
        row = self._record(
            "REMIT", msisdn=msisdn, amount=amount, product_id=product, scheduled_send=body["scheduled_send"]
        )
        answer = {
            "response_status": "00",
            "response": f"Payment of KES {amount:,} to {msisdn} accepted for processing",
            "transaction_id": row["transaction_id"],
        }
        return answer, row

    def _new_reference(self, kind: str, msisdn: str, amount: int) -> dict[str, Any]:
        ref = f"{kind[:2]}{uuid.uuid4().hex[:10].upper()}"
        with self._lock:
            self._references[ref] = {"kind": kind, "msisdn": msisdn, "amount": amount, "used": False}
        return {
            "response_status": "00",
            "response": f"{kind.title()} created: checkout with the reference to pay KES {amount:,}",
            "reference": ref,
            "amount": amount,
        }

    def _sale(self, body: dict[str, Any], no):
        item, msisdn, amount = body["product_item_id"], body["MSISDN"], body["amount"]
        if not isinstance(msisdn, str) or not _B2C_MSISDN.match(msisdn):
            return no("05", f"{msisdn!r}")
        try:
            item = int(item)
        except (TypeError, ValueError):
            return no("04", "product_item_id must be a number")
        if item not in PRODUCT_ITEMS:
            return no("10", f"product item {item}")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return no("06", f"{amount!r}")
        return self._new_reference("SALE", msisdn, amount), None

    def _order(self, body: dict[str, Any], no):
        msisdn, items = body["MSISDN"], body["cart_items"]
        if not isinstance(msisdn, str) or not _B2C_MSISDN.match(msisdn):
            return no("05", f"{msisdn!r}")
        if not isinstance(items, list) or not items:
            return no("04", "cart_items must be a non-empty list")
        total = 0
        for it in items:
            if not isinstance(it, dict) or it.get("product_item_id") not in PRODUCT_ITEMS:
                return no("10", f"cart item {it!r}")
            qty = it.get("quantity", 1)
            if not isinstance(qty, int) or qty <= 0:
                return no("04", f"quantity {qty!r}")
            total += PRODUCT_ITEMS[it["product_item_id"]] * qty
        return self._new_reference("ORDER", msisdn, total), None

    def _checkout(self, body: dict[str, Any], no):
        ref, msisdn = body["reference"], body["MSISDN"]
        with self._lock:
            entry = self._references.get(ref) if isinstance(ref, str) else None
            if entry is None or entry["used"]:
                entry = None
            else:
                entry["used"] = True
        if entry is None:
            return no("09", f"{ref!r}")
        row = self._record("CHECKOUT", msisdn=msisdn, amount=entry["amount"], reference=ref)
        return {
            "response_status": "00",
            "response": f"Payment of KES {entry['amount']:,} for {ref} received",
            "reference": ref,
            "transaction_id": row["transaction_id"],
        }, row


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True
    server: _Server
    server_version = "MipaySandbox/1"

    def log_message(self, fmt: str, *args: Any) -> None:  # only the request line, never a body
        log = self.server.sandbox.log
        if log is not None:
            log(f"{self.address_string()} {fmt % args}")

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _html(self, status: int, title: str) -> None:
        page = f"<html><head><title>{status} {title}</title></head><body><h1>{title}</h1></body></html>"
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _service(self) -> str | None:
        for name, (path, _) in protocol.SERVICES.items():
            if self.path == path:
                return name
        return None

    def do_GET(self) -> None:
        if self.path == "/_sandbox/ledger":
            self._json(200, self.server.sandbox.ledger())
        elif self._service():
            self.send_response(405)
            self.send_header("Allow", "POST")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._html(404, "Not Found")

    def do_PUT(self) -> None:
        self._read_body()
        self._html(404 if not self._service() else 405, "Method Not Allowed")

    do_DELETE = do_PATCH = do_PUT

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:
        sandbox = self.server.sandbox
        raw = self._read_body()
        service = self._service()
        if service is None:
            self._html(404, "Not Found")
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._json(415, {"response_status": "04", "response": "Content-Type must be application/json"})
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        # A stable identity for the request (its fields, not its timestamp or schedule, which
        # follow the clock), so a seeded fault hits the same row the same way whatever the
        # order of arrival or the time of the run.
        key = service
        if isinstance(body, dict):
            key += "|" + "|".join(str(body.get(n)) for n in protocol.SERVICES[service][1] if n != "scheduled_send")
        fault = sandbox._next_fault(key)
        faults = sandbox.faults
        if faults.latency:
            sandbox._stopping.wait(faults.latency)
        if isinstance(fault, dict):
            self._json(200, fault)
            return
        if fault == "throttle":
            self._json(
                429,
                {"response_status": "429", "response": "Too many requests"},
                {"Retry-After": f"{faults.retry_after:g}"},
            )
            return
        if fault == "http503":
            self._html(503, "Service Unavailable")
            return
        if body is None:
            self._json(200, {"response_status": "04", "response": "The body is not valid JSON"})
            return
        answer, recorded = sandbox.handle(service, body)
        if recorded is not None and TEST_NUMBERS.get(recorded.get("msisdn")) == "drop":
            fault = "drop"
        if fault == "timeout":
            sandbox._stopping.wait(faults.hang)
            self.close_connection = True
            return
        if fault == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "http500":
            self._html(500, "Internal Server Error")
            return
        if fault == "html":
            self._html(200, "Gateway maintenance")
            return
        self._json(200, answer)

