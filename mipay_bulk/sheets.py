"""Reading payout sheets: xlsx, xlsm, xls, ods and csv, every cell as text.

Every cell arrives as the analyst typed it, as text: a phone number never becomes a float,
``NA`` never becomes missing. Numbers Excel stored as numbers are written back without a
spurious ``.0``; date cells become ISO text (``2026-09-17 18:31:00``), which the validator
reads as Nairobi time. Each row keeps the row number the analyst sees in Excel.

Workbooks are read with python-calamine, the engine behind
``pandas.read_excel(engine="calamine")``, called directly so that one open gives both the
sheet list (with visibility, to skip hidden sheets) and the cells, with blank rows kept so
row numbers stay true. CSV goes through ``pandas.read_csv`` with every type guess off.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import SheetError

EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".ods", ".xlsb"}
CSV_SUFFIXES = {".csv", ".txt", ".tsv"}
HEADER_SEARCH_ROWS = 20

#: Canonical column -> accepted header names (compared without case, spaces or punctuation).
ALIASES: dict[str, tuple[str, ...]] = {
    "msisdn": ("MSISDN", "phone", "phone number", "phone no", "mobile", "mobile number", "recipient",
               "telephone", "msisdn/short code", "short code"),
    "amount": ("amount", "amount (KES)", "KES", "amount KES", "Ksh", "amount (Ksh)", "amount kshs"),
    "product_id": ("product_id", "product", "type", "product type"),
    "scheduled_send": ("scheduled_send", "schedule", "send at", "date", "scheduled", "send date",
                       "scheduled send", "send time"),
    "reference": ("reference", "ref", "payment reference", "your reference"),
    "name": ("name", "recipient name", "full name", "payee", "payee name"),
}
REQUIRED = ("msisdn", "amount")


def header_key(text: str) -> str:
    """``'Amount (KES)'`` -> ``'amountkes'``: case, spaces and punctuation do not count."""
    return re.sub(r"[^0-9a-z]", "", str(text).lower())


_ALIAS_INDEX = {header_key(a): canon for canon, names in ALIASES.items() for a in names}


@dataclass
class LoadedSheet:
    """A sheet as text: ``rows`` holds a ``row`` column (the Excel row number) and every
    original column under its original header; ``columns`` maps the canonical names
    (``msisdn``, ``amount``, ``product_id``, ``scheduled_send``, ``reference``, ``name``)
    to the headers they were found under."""

    path: Path
    sheet: str | None
    header_row: int
    headers: list[str]
    columns: dict[str, str]
    rows: pd.DataFrame
    sha256: str = ""
    extra: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        where = f"{self.path.name}" + (f" [{self.sheet}]" if self.sheet else "")
        return f"<LoadedSheet {where}: {len(self.rows)} rows, header on row {self.header_row}>"

    def _repr_html_(self) -> str:
        return f"<p><b>{self!r}</b></p>" + self.rows.head(20).to_html(index=False)


def cell_text(value: Any) -> str:
    """A cell as the analyst would read it in Excel, as text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


def _file_bytes_head(path: Path, n: int = 8) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SheetError("no such file", path=str(path))
    if path.is_dir():
        raise SheetError("is a folder, not a file: give the path of the sheet itself", path=str(path))
    if path.stat().st_size == 0:
        raise SheetError("the file is empty (0 bytes)", path=str(path))


def _sniff_excel(path: Path) -> None:
    """Refuse, with a plain reason, files that only pretend to be workbooks."""
    head = _file_bytes_head(path, 8)
    suffix = path.suffix.lower()
    if head.startswith(b"%PDF"):
        raise SheetError("this is a PDF file, not a spreadsheet: export the payouts to .xlsx or .csv",
                         path=str(path))
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # an OLE compound file: .xls, or an encrypted xlsx
        if suffix != ".xls":
            data = path.read_bytes()
            if "EncryptionInfo".encode("utf-16-le") in data:
                raise SheetError(
                    "the workbook is password-protected: open it in Excel, remove the password "
                    "(File > Info > Protect Workbook), save, and try again",
                    path=str(path),
                )
        return
    if suffix in (".xlsx", ".xlsm", ".ods", ".xlsb"):
        if not head.startswith(b"PK"):
            raise SheetError(f"this is not a {suffix} workbook (its content is not a spreadsheet)",
                             path=str(path))
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile:
            raise SheetError(f"this {suffix} file is damaged or not a workbook", path=str(path)) from None
        if suffix != ".ods" and "xl/workbook.xml" not in names and "xl/workbook.bin" not in names:
            raise SheetError(f"this is a zip archive, not an Excel workbook (renamed to {suffix}?)",
                             path=str(path))
        if suffix == ".ods" and "content.xml" not in names:
            raise SheetError("this is a zip archive, not an OpenDocument spreadsheet", path=str(path))


def _xlsx_dimension_rows(path: Path, sheet_name: str) -> int | None:
    """The row count an xlsx sheet declares in its ``<dimension>``, read without loading the sheet."""
    try:
        with zipfile.ZipFile(path) as zf:
            wb = zf.read("xl/workbook.xml").decode("utf-8", "replace")
            rels = zf.read("xl/_rels/workbook.xml.rels").decode("utf-8", "replace")
            rid = None
            for m in re.finditer(r"<(?:\w+:)?sheet\b[^>]*>", wb):
                tag = m.group(0)
                name = re.search(r'\bname="([^"]*)"', tag)
                if name and _xml_unescape(name.group(1)) == sheet_name:
                    found = re.search(r'\br:id="([^"]*)"', tag) or re.search(r'\bid="([^"]*)"', tag)
                    rid = found.group(1) if found else None
                    break
            if rid is None:
                return None
            target = None
            for m in re.finditer(r"<Relationship\b[^>]*>", rels):
                tag = m.group(0)
                if f'Id="{rid}"' in tag:
                    t = re.search(r'Target="([^"]*)"', tag)
                    target = t.group(1) if t else None
            if target is None:
                return None
            target = target.lstrip("/")
            member = target if target.startswith("xl/") else "xl/" + target
            with zf.open(member) as fh:
                head = fh.read(4096).decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    dim = re.search(r'<(?:\w+:)?dimension ref="[A-Z]+(\d+)(?::[A-Z]+(\d+))?"', head)
    if not dim:
        return None
    return int(dim.group(2) or dim.group(1))


def _xml_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&apos;", "'").replace(
        "&amp;", "&"
    )


def _read_workbook(path: Path, sheet: str | int | None, max_rows: int) -> tuple[str, list[list[Any]]]:
    from python_calamine import CalamineWorkbook, SheetTypeEnum, SheetVisibleEnum

    try:
        wb = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types for unreadable files
        raise SheetError(f"cannot be read as a spreadsheet ({type(exc).__name__}: {exc})", path=str(path)) from None
    try:
        meta = [m for m in wb.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet]
        visible = [m.name for m in meta if m.visible == SheetVisibleEnum.Visible]
        names = [m.name for m in meta]
        if sheet is None:
            if not visible:
                raise SheetError("the workbook has no visible sheet", path=str(path))
            name = visible[0]
        elif isinstance(sheet, int):
            if not 0 <= sheet < len(visible):
                raise SheetError(f"there is no visible sheet number {sheet}; sheets: {', '.join(visible)}",
                                 path=str(path))
            name = visible[sheet]
        else:
            if sheet not in names:
                raise SheetError(f"there is no sheet named {sheet!r}; sheets: {', '.join(names)}", path=str(path))
            name = sheet
        if path.suffix.lower() in (".xlsx", ".xlsm"):
            declared = _xlsx_dimension_rows(path, name)
            if declared is not None and declared > max_rows + HEADER_SEARCH_ROWS:
                raise SheetError(
                    f"sheet {name!r} has {declared:,} rows, more than the limit of {max_rows:,} payouts "
                    "(split the file, or raise Limits.max_rows)",
                    path=str(path),
                )
        try:
            data = wb.get_sheet_by_name(name).to_python(skip_empty_area=False)
        except Exception as exc:
            raise SheetError(f"sheet {name!r} cannot be read ({type(exc).__name__}: {exc})", path=str(path)) from None
        if not any(any(cell_text(c).strip() for c in row) for row in data):
            others = [n for n in visible if n != name]
            hint = f"; the workbook's other sheets: {', '.join(others)} (choose one with --sheet)" if others else ""
            raise SheetError(f"sheet {name!r} is empty{hint}", path=str(path))
        return name, data
    finally:
        wb.close()


_DELIMITERS = (",", ";", "\t", "|")


def _decode(raw: bytes) -> str:
    # UTF-8 (with or without BOM) first; Excel's "Save as CSV" on Windows writes cp1252.
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _read_csv(path: Path, max_rows: int, ragged: bool = False) -> list[list[str]]:
    lines = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            if lines > max_rows + HEADER_SEARCH_ROWS:
                raise SheetError(
                    f"the file has more than {max_rows:,} rows, the limit for one run "
                    "(split the file, or raise Limits.max_rows)",
                    path=str(path),
                )
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = raw.decode("utf-16")
        else:
            raise SheetError("this is a binary file, not a CSV", path=str(path))
    else:
        text = _decode(raw)
    lines = text.splitlines()
    # The header is the line with the most delimiters among the first few (exports put
    # one-cell preamble lines above it).
    head = [ln for ln in lines[:HEADER_SEARCH_ROWS] if ln.strip()] if ragged else \
        [next((ln for ln in lines if ln.strip()), "")]
    delimiter = max(_DELIMITERS, key=lambda d: max(ln.count(d) for ln in head) if head else 0)
    if not head or max(ln.count(delimiter) for ln in head) == 0:
        delimiter = ","
    if ragged:
        import csv

        return [row for row in csv.reader(io.StringIO(text), delimiter=delimiter)]
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m:
            expected, line, saw = m.groups()
            raise SheetError(
                f"this row has {saw} fields where the rows above have {expected} "
                "(a stray delimiter or an unquoted comma in a value?)",
                path=str(path),
                row=int(line),
            ) from None
        raise SheetError(f"cannot be read as CSV ({exc})", path=str(path)) from None
    except pd.errors.EmptyDataError:
        raise SheetError("the file holds no data", path=str(path)) from None
    return frame.fillna("").values.tolist()


def read_cells(path: str | Path, sheet: str | int | None = None, *, max_rows: int = 200_000,
               ragged: bool = False) -> tuple[str | None, list[list[str]]]:
    """Every cell of a sheet (or CSV) as text, rows as in the file. Raises :class:`SheetError`.

    ``ragged`` lets CSV rows differ in length (exports with preamble lines above the header).
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            sheet_name = None
            data = _read_csv(path, max_rows, ragged)
        elif suffix in EXCEL_SUFFIXES:
            _sniff_excel(path)
            sheet_name, data = _read_workbook(path, sheet, max_rows)
        else:
            data = None
    except OSError as exc:
        raise SheetError(f"cannot be read ({exc.strerror or exc})", path=str(path)) from None
    if data is None:
        raise SheetError(
            f"files ending in {suffix or '(nothing)'} are not read; use .xlsx, .xlsm, .xls, .ods or .csv",
            path=str(path),
        )
    texts = [[cell_text(c) for c in row] for row in data]
    if not any(any(c.strip() for c in row) for row in texts):
        raise SheetError("the sheet holds no data", path=str(path))
    return sheet_name, texts


def _find_header(data: list[list[str]]) -> int:
    """Index of the header row: the one among the first rows naming the most known columns."""
    best, best_score = -1, 0
    for i, row in enumerate(data[:HEADER_SEARCH_ROWS]):
        score = len({_ALIAS_INDEX[k] for k in (header_key(c) for c in row) if k in _ALIAS_INDEX})
        if score > best_score:
            best, best_score = i, score
    return best


def accepted_names() -> str:
    return "; ".join(f"{canon}: {', '.join(names)}" for canon, names in ALIASES.items())


def load_sheet(path: str | Path, sheet: str | int | None = None, *, max_rows: int = 200_000) -> LoadedSheet:
    """Load a payout sheet as text. Raises :class:`~mipay_bulk.errors.SheetError` for a file
    that is not a usable payout sheet, with the file, row and column where that applies."""
    path = Path(path)
    sheet_name, texts = read_cells(path, sheet, max_rows=max_rows)
    h = _find_header(texts)
    if h < 0:
        found = next(([c for c in row if c.strip()] for row in texts if any(c.strip() for c in row)), [])
        raise SheetError(
            f"no payout header found. Headers found: {', '.join(repr(c) for c in found) or 'none'}. "
            f"Accepted names: {accepted_names()}",
            path=str(path),
        )
    width = max(len(r) for r in texts)
    raw_headers = texts[h] + [""] * (width - len(texts[h]))
    # Keep every column; name the unnamed ones by their Excel letter so nothing is lost.
    headers: list[str] = []
    for i, name in enumerate(raw_headers):
        name = name.strip() or f"column {_excel_letter(i)}"
        if name == "row":  # the name of our own row-number column
            name = "row (sheet)"
        while name in headers:
            name += " (2)"
        headers.append(name)
    columns: dict[str, str] = {}
    for name in headers:
        canon = _ALIAS_INDEX.get(header_key(name))
        if canon is None:
            continue
        if canon in columns:
            raise SheetError(
                f"two columns could be the {canon}: {columns[canon]!r} and {name!r}; rename one of them",
                path=str(path),
                row=h + 1,
            )
        columns[canon] = name
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise SheetError(
            f"no {' or '.join(missing)} column. Headers found: {', '.join(repr(x) for x in headers)}. "
            f"Accepted names: {accepted_names()}",
            path=str(path),
            row=h + 1,
        )
    body = texts[h + 1:]
    numbers = list(range(h + 2, h + 2 + len(body)))
    keep = [i for i, row in enumerate(body) if any(c.strip() for c in row)]  # blank rows are skipped
    if not keep:
        raise SheetError("the sheet has a header row but no payout rows", path=str(path))
    if len(keep) > max_rows:
        raise SheetError(f"the sheet has {len(keep):,} payout rows, more than the limit of {max_rows:,}",
                         path=str(path))
    rows = [body[i] + [""] * (width - len(body[i])) for i in keep]
    frame = pd.DataFrame(rows, columns=headers, dtype=object)
    frame.insert(0, "row", [numbers[i] for i in keep])
    extra = [c for c in headers if c not in columns.values()]
    return LoadedSheet(path=path, sheet=sheet_name, header_row=h + 1, headers=headers, columns=columns,
                       rows=frame, sha256=file_sha256(path), extra=extra)


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes: how a run recognises the same sheet under another name."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _excel_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters
