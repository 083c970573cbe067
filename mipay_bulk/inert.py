"""Keeping text from a sheet or a gateway answer inert in what we write for spreadsheets.

A cell that starts with ``=``, ``+``, ``-``, ``@``, tab, CR or LF can become a live formula
when a CSV is opened in Excel. OWASP's advice for CSV: prefix such a value with a single
quote so it is shown as the text it is. Workbooks do not need this: their cells are written
as typed strings with formula conversion off (see ``report.py``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(value: Any) -> Any:
    """``'=1+1'`` -> ``"'=1+1"``; anything that is not text is returned as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells (and headers) are all inert."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(neutralise)
    out.columns = [neutralise(c) for c in out.columns]
    return out
