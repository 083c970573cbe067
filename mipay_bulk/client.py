"""``MipayClient``: signed REMIT, SALE, ORDER and CHECKOUT calls over ``requests``.

Every call returns an :class:`Outcome`; a gateway's "no", a timeout or a dropped
connection is an outcome with its :class:`~mipay_bulk.protocol.OutcomeClass`, never an
exception. The client never retries a POST by itself (urllib3's retries are off and
redirects are not followed): whether an attempt may be repeated is the runner's decision,
made from the outcome class alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import protocol
from .config import Secret, Settings, check_api_key, check_gateway_url, check_ip_address
from .errors import ConfigurationError, CouldNotSend, GatewayRejected, OutcomeUnknown
from .protocol import OutcomeClass

#: The one place answers are cut for storing: a gateway error page can be large.
MAX_TEXT = 2000


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt. Holds no secret, so its ``repr`` is safe to print or log."""

    service: str
    outcome: OutcomeClass
    http_status: int | None = None
    response_status: str | None = None
    response: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    error: str | None = None
    retry_after: float | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome is OutcomeClass.ACCEPTED

    def raise_for_outcome(self) -> Outcome:
        """Return self if accepted, else raise the matching :class:`~mipay_bulk.errors.OutcomeError`."""
        detail = self.response or self.error or f"HTTP {self.http_status}"
        if self.outcome is OutcomeClass.ACCEPTED:
            return self
        if self.outcome is OutcomeClass.REJECTED:
            raise GatewayRejected(f"{self.service} rejected ({self.response_status}): {detail}", outcome=self)
        if self.outcome is OutcomeClass.UNKNOWN:
            raise OutcomeUnknown(f"{self.service} outcome unknown: {detail}", outcome=self)
        raise CouldNotSend(f"{self.service} not sent ({self.outcome}): {detail}", outcome=self)

    def _repr_html_(self) -> str:
        import html

        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td style='text-align:left'>"
                        f"{html.escape(str(v))}</td></tr>" for k, v in self.as_dict().items())
        return f"<table>{cells}</table>"

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "outcome": str(self.outcome),
            "http_status": self.http_status,
            "response_status": self.response_status,
            "response": self.response,
            "extra": dict(self.extra),
            "elapsed": self.elapsed,
            "error": self.error,
        }


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        # An HTTP-date form: honour it roughly rather than not at all.
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class MipayClient:
    """A client for the MIPAY gateway.

    ``MipayClient(base_url=..., username=..., password=..., api_key=..., ip_address=...,
    timeout=(connect, read))``. Construction checks the settings and raises
    :class:`~mipay_bulk.errors.ConfigurationError` for an API key that is not base64, an
    empty username or a base URL that is not http(s). Each thread gets its own
    ``requests.Session`` with one pooled keep-alive connection, so a pool of N workers
    holds N connections. ``clock`` gives the Unix time that is signed (tests fix it).
    """

    def __init__(
        self,
        base_url: str = protocol.DEFAULT_GATEWAY_URL,
        *,
        username: str,
        password: str | Secret,
        api_key: str | Secret,
        ip_address: str,
        timeout: tuple[float, float] = (5.0, 30.0),
        paths: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = check_gateway_url(base_url)
        if not username or not username.strip():
            raise ConfigurationError("the username is empty", hint="set MIPAY_USERNAME")
        self.username = username
        self._password = password if isinstance(password, Secret) else Secret(password)
        self._api_key = api_key if isinstance(api_key, Secret) else Secret(api_key)
        if not self._password:
            raise ConfigurationError("the password is empty", hint="set MIPAY_PASSWORD")
        check_api_key(self._api_key.reveal())
        self.ip_address = check_ip_address(ip_address)
        connect, read = timeout
        self.timeout = (float(connect), float(read))
        self.paths = {name: path for name, (path, _) in protocol.SERVICES.items()}
        for name, path in (paths or {}).items():
            if name not in self.paths:
                raise ConfigurationError(f"unknown service {name!r} in paths")
            self.paths[name] = path if path.endswith("/") else path + "/"
        self.clock = clock
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> MipayClient:
        return cls(
            settings.gateway_url,
            username=settings.username,
            password=settings.password,
            api_key=settings.api_key,
            ip_address=settings.ip_address,
            timeout=(settings.connect_timeout, settings.read_timeout),
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"MipayClient(base_url={self.base_url!r}, username={self.username!r}, ip_address={self.ip_address!r})"

    # -- sessions -------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Proxies and netrc from the environment stay honoured; TLS verification stays on.
            adapter = HTTPAdapter(
                pool_connections=1,
                pool_maxsize=1,
                max_retries=Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0),
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers.update({"Accept": "application/json", "User-Agent": _user_agent()})
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self) -> MipayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------

    def signed_body(self, service: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The body that would be sent now, signed. It holds the password: never print it as is."""
        return protocol.build_body(
            service,
            params,
            timestamp=int(self.clock()),
            ip_address=self.ip_address,
            username=self.username,
            password=self._password.reveal(),
            api_key=self._api_key.reveal(),
        )

    def masked_body(self, service: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`signed_body` with the password masked, for ``--dry-run`` and debugging."""
        body = self.signed_body(service, params)
        body["credentials"] = {"username": self.username, "password": "********"}
        return body

    def call(self, service: str, params: Mapping[str, Any]) -> Outcome:
        """Sign and POST one call; classify whatever happens into an :class:`Outcome`."""
        body = self.signed_body(service, params)
        url = self.base_url + self.paths[service]
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        started = time.perf_counter()
        try:
            resp = self._session().post(
                url,
                data=data,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            return Outcome(
                service=service,
                outcome=protocol.classify_transport_error(exc),
                elapsed=time.perf_counter() - started,
                error=_describe(exc),
            )
        elapsed = time.perf_counter() - started
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        outcome = protocol.classify_answer(resp.status_code, payload)
        if isinstance(payload, dict):
            extra = {k: v for k, v in payload.items() if k not in ("response_status", "response")}
            status = payload.get("response_status")
            message = payload.get("response")
            return Outcome(
                service=service,
                outcome=outcome,
                http_status=resp.status_code,
                response_status=None if status is None else str(status),
                response=None if message is None else str(message)[:MAX_TEXT],
                extra=extra,
                elapsed=elapsed,
                retry_after=_retry_after(resp.headers.get("Retry-After")),
            )
        return Outcome(
            service=service,
            outcome=outcome,
            http_status=resp.status_code,
            elapsed=elapsed,
            error=f"HTTP {resp.status_code} {resp.reason}: {resp.text[:200]!r}",
            retry_after=_retry_after(resp.headers.get("Retry-After")),
        )

    def remit(self, *, msisdn: str, amount: int, product_id: str, scheduled_send: str) -> Outcome:
        """Pay ``amount`` whole shillings to ``msisdn`` (``B2C``) or a short code (``B2B``)."""
        return self.call(
            "REMIT",
            {"MSISDN": msisdn, "amount": amount, "product_id": product_id, "scheduled_send": scheduled_send},
        )

    def sale(self, *, product_item_id: int | str, msisdn: str, amount: int) -> Outcome:
        """Start a sale of a product item; the answer carries a ``reference`` for checkout."""
        return self.call("SALE", {"product_item_id": product_item_id, "MSISDN": msisdn, "amount": amount})

    def order(self, *, cart_items: list[dict[str, Any]], msisdn: str) -> Outcome:
        """Order the cart's items; the answer carries a ``reference`` for checkout."""
        return self.call("ORDER", {"MSISDN": msisdn, "cart_items": cart_items})

    def checkout(self, *, reference: str, msisdn: str) -> Outcome:
        """Pay for a sale or order by its ``reference``; a reference is good once."""
        return self.call("CHECKOUT", {"reference": reference, "MSISDN": msisdn})


def _describe(exc: BaseException) -> str:
    # requests' messages can be long chains; the class and the innermost reason are enough.
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}"


def _user_agent() -> str:
    from . import __version__

    return f"mipay-bulk/{__version__} python-requests/{requests.__version__}"
