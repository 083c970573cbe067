"""mipay_bulk: bulk M-PESA payouts through the MIPAY gateway, from a spreadsheet.

Load a sheet, validate it, send signed REMIT calls with a crash-safe journal, and write a
reconciliation workbook. The names below are the public face; everything else is internal.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import MipayClient, Outcome
from .config import Limits, Settings
from .errors import (
    ConfigurationError,
    InputError,
    MipayError,
    RunRefused,
    SheetError,
)
from .journal import resolve, runs
from .protocol import OutcomeClass
from .reconcile import Reconciliation, reconcile
from .report import outcome_table, results, summary_sentence, write_report
from .runner import RunResult, run_payouts
from .sandbox import Faults, Sandbox
from .sheets import LoadedSheet
from .statement import Statement, load_statement
from .validate import Validation, load_payouts, validate

__all__ = [
    "ConfigurationError",
    "Faults",
    "InputError",
    "Limits",
    "LoadedSheet",
    "MipayClient",
    "MipayError",
    "Outcome",
    "OutcomeClass",
    "Reconciliation",
    "RunRefused",
    "RunResult",
    "Sandbox",
    "Settings",
    "SheetError",
    "Statement",
    "Validation",
    "__version__",
    "load_payouts",
    "load_statement",
    "outcome_table",
    "reconcile",
    "resolve",
    "results",
    "run_payouts",
    "runs",
    "summary_sentence",
    "validate",
    "write_report",
]
