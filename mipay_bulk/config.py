"""Settings: explicit arguments first, then the environment, then a ``.env`` file.

The environment is read here and only when asked (``Settings.from_env``), at the edge: the
CLI and the notebooks' helper call it; the library itself takes explicit arguments.
Secrets are held in :class:`Secret`, whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .protocol import DEFAULT_GATEWAY_URL, decode_api_key

ENV_VARS = {
    "gateway_url": "MIPAY_GATEWAY_URL",
    "username": "MIPAY_USERNAME",
    "password": "MIPAY_PASSWORD",
    "api_key": "MIPAY_API_KEY",
    "ip_address": "MIPAY_IP_ADDRESS",
}


def env_value(var: str, env: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env") -> str | None:
    """A variable from ``env`` (default ``os.environ``), else from the ``.env`` file; ``None`` if unset."""
    return _read_env(env, dotenv).get(var) or None


def _read_env(env: Mapping[str, str] | None, dotenv: str | Path | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if dotenv is not None and Path(dotenv).is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(dotenv).items() if v})
    values.update({k: v for k, v in (os.environ if env is None else env).items() if v})
    return values


class Secret:
    """A string that does not show itself: ``repr``/``str`` give ``'********'``; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __reduce__(self):  # a Secret is never pickled into a file by accident
        raise TypeError("a Secret cannot be pickled")


def check_gateway_url(url: str) -> str:
    """The URL without a trailing slash; ``ConfigurationError`` unless it is http(s) with a host."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"gateway URL {url!r} is not an http(s) URL",
            hint=f"set {ENV_VARS['gateway_url']} to e.g. {DEFAULT_GATEWAY_URL}",
        )
    return url.rstrip("/")


def check_ip_address(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise ConfigurationError(
            f"IP address {ip!r} is neither IPv4 nor IPv6",
            hint=f"set {ENV_VARS['ip_address']} to the address your gateway account is registered with",
        ) from None


def check_api_key(api_key: str) -> None:
    try:
        decode_api_key(api_key)
    except ValueError as exc:
        raise ConfigurationError(
            f"{exc}", hint=f"copy {ENV_VARS['api_key']} exactly as the gateway issued it"
        ) from None


@dataclass(frozen=True)
class Limits:
    """Everything the validator checks against, in one object; override any field.

    Defaults: B2C payments from KES 10 to KES 250,000 (Safaricom's published B2C limits);
    B2B from KES 10 to KES 999,999 (set yours); KES 500,000 per recipient per day; schedules
    at most 5 minutes in the past and ``horizon_days`` ahead; a date without a time means
    ``default_time`` (08:00 Nairobi); sheets above ``max_rows`` are refused before reading.
    """

    b2c_min: int = 10
    b2c_max: int = 250_000
    b2b_min: int = 10
    b2b_max: int = 999_999
    daily_limit: int = 500_000
    horizon_days: int = 90
    past_tolerance_minutes: int = 5
    default_time: time = time(8, 0)
    max_rows: int = 200_000

    def amount_range(self, product: str) -> tuple[int, int]:
        return (self.b2b_min, self.b2b_max) if product == "B2B" else (self.b2c_min, self.b2c_max)


@dataclass(frozen=True)
class Settings:
    """How to reach the gateway, who we are, and the limits rows are validated against.

    ``repr()`` shows no secret. Build it with explicit arguments, or with
    :meth:`from_env` at the edge of a program.
    """

    gateway_url: str = DEFAULT_GATEWAY_URL
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    api_key: Secret = field(default_factory=lambda: Secret(""))
    ip_address: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        for name in ("password", "api_key"):
            value = getattr(self, name)
            if not isinstance(value, Secret):
                object.__setattr__(self, name, Secret(str(value)))

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        dotenv: str | Path | None = ".env",
        **explicit: Any,
    ) -> Settings:
        """Explicit arguments win, then ``env`` (default ``os.environ``), then the ``.env`` file.

        Raises :class:`ConfigurationError` naming the first missing variable and how to set it.
        """
        found = _read_env(env, dotenv)
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            if explicit.get(name) not in (None, ""):
                values[name] = explicit.pop(name)
            elif found.get(var):
                values[name] = found[var]
            else:
                explicit.pop(name, None)
        values.update({k: v for k, v in explicit.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise :class:`ConfigurationError` for the first missing or unusable setting."""
        check_gateway_url(self.gateway_url)
        for name in ("username", "password", "api_key", "ip_address"):
            value = getattr(self, name)
            if not value or (isinstance(value, str) and not value.strip()):
                var = ENV_VARS[name]
                raise ConfigurationError(
                    f"{var} is not set",
                    hint=f"export {var}=... in your shell, or put a line {var}=... in a .env file in this folder",
                )
        check_api_key(self.api_key.reveal())
        check_ip_address(self.ip_address)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "limits"
        )
        return f"Settings({shown})"
