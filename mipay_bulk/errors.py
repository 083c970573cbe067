"""The one exception tree of mipay_bulk.

Problems *in the data* (a bad phone number on row 14) are not exceptions: they are rows of
the issues table that :func:`mipay_bulk.validate` returns. A gateway's "no" is not an
exception either: it is an :class:`~mipay_bulk.client.Outcome`. Exceptions are raised only
to stop something that cannot go on::

    MipayError                      base of everything raised on purpose here
    ├── ConfigurationError          settings missing or unusable; carries a HINT line
    ├── InputError                  a file or a command line that cannot be used (exit 2)
    │   └── SheetError              the sheet itself: which file, row, column, what was found
    ├── RunRefused                  sending was refused to protect money (re-run, paid
    │                               reference, over --max-total); nothing was sent (exit 2)
    ├── JournalError                the journal cannot be opened or does not hold that run
    └── OutcomeError                raised only on request, by Outcome.raise_for_outcome()
        ├── CouldNotSend            the request never reached the gateway (not_sent, throttled)
        ├── GatewayRejected         the gateway answered and said no (rejected)
        └── OutcomeUnknown          it may or may not have reached the gateway (unknown)

"Could not send" and "the gateway said no" are different branches on purpose: the first
may be retried, the second is final, and the third must be checked by a person.
"""

from __future__ import annotations

from typing import Any


class MipayError(Exception):
    """Base class of every exception mipay_bulk raises on purpose."""


class ConfigurationError(MipayError):
    """A setting is missing or cannot be used. ``hint`` says how to fix it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHINT: {hint}")


class InputError(MipayError):
    """A file or command line that cannot be used; nothing is sent."""


class SheetError(InputError):
    """A sheet that is not a usable payout sheet, with where and what."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = path
        self.row = row
        self.column = column
        where = []
        if path:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class RunRefused(MipayError):
    """Sending was refused to protect money; nothing was sent."""


class JournalError(MipayError):
    """The journal cannot be used, or does not hold what was asked for."""


class OutcomeError(MipayError):
    """Raised by ``Outcome.raise_for_outcome()``; carries the outcome itself."""

    def __init__(self, message: str, *, outcome: Any) -> None:
        self.outcome = outcome
        super().__init__(message)


class CouldNotSend(OutcomeError):
    """The request did not reach the gateway (``not_sent``) or was throttled."""


class GatewayRejected(OutcomeError):
    """The gateway answered with a status other than ``00``."""


class OutcomeUnknown(OutcomeError):
    """The request may have reached the gateway; check the statement before sending again."""
