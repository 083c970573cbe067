"""Writes samples/payouts.xlsx, payouts.csv and customers.xlsx (run it to rebuild them).

Every row's purpose is in the ``Note`` column and in samples/README.md. Valid rows leave the
schedule blank ("send now"), so the sample stays valid whatever the day it is run; the
schedule forms are shown by rows that are errors on any day (a past date, a month-first
date, a day that does not exist, a date years ahead).
"""

from __future__ import annotations

import csv
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font

HERE = Path(__file__).parent
HEADERS = ["Reference", "Name", "Phone", "Amount (KES)", "Product", "Send at", "Department", "Note"]

# (reference, name, phone, amount, product, send at, department, note)
ROWS: list[tuple] = [
    ("PAY-0001", "Wanjiku Kamau", "0712345678", "1,500", "B2C", "", "Field", "valid: 07.. number, 1,500"),
    ("PAY-0002", "Otieno Odhiambo", "+254 722 456 789", "KES 2,000", "B2C", "", "Field", "valid: +254 with spaces"),
    ("PAY-0003", "Achieng Atieno", "254-713-987-654", "Ksh3,250/=", "B2C", "", "Sales", "valid: dashes, Ksh../="),
    ("PAY-0004", "Kiprotich Kiptoo", "(0714) 112233", 4500, "b2c", "", "Sales", "valid: brackets, lower-case b2c"),
    ("PAY-0005", "Njeri Mwangi", 715223344, 1200, "B2C", "", "Field", "valid: numeric cell lost its 0"),
    ("PAY-0006", "Mutua Musyoka", "716334455.0", "1500.00", " B2C ", "", "Field", "valid: Excel's .0, 1500.00"),
    ("PAY-0007", "Chebet Jepkosgei", "2.54717445566E+11", "800", "B2C", "", "Admin", "valid: scientific form, exact"),
    ("PAY-0008", "Kamau Njoroge", "0110123456", "2,750", "B2C", "", "Admin", "valid: 011 number"),
    ("PAY-0009", "Wambui Wairimu", "0718556677", "10", "B2C", "", "Admin", "valid: the B2C minimum"),
    ("PAY-0010", "Omondi Ouma", "0719667788", "250,000", "B2C", "", "Bonus", "valid: the B2C maximum"),
    ("PAY-0011", "Jeptoo Rotich", "0720778899", "6,400", "B2C", "", "Field", "valid"),
    ("PAY-0012", "Mwangi Karanja", "0721889900", "3,300", "B2C", "", "Field", "valid"),
    ("PAY-0013", "Akinyi Adhiambo", "0722990011", "1,750", "B2C", "", "Sales", "valid"),
    ("PAY-0014", "Kibet Langat", "0723001122", "900", "B2C", "", "Sales", "valid"),
    ("PAY-0015", "Nyambura Gathoni", "0724112233", "12,000", "B2C", "", "Bonus", "valid"),
    ("PAY-0016", "Barasa Wekesa", "0725223344", "2,200", "B2C", "", "Field", "valid"),
    ("PAY-0017", "Moraa Kerubo", "0726334455", "5,000", "B2C", "", "Field", "valid"),
    ("PAY-0018", "Ngugi Kariuki", "0727445566", "1,100", "B2C", "", "Admin", "valid"),
    ("PAY-0019", "Auma Awino", "0728556677", "7,800", "B2C", "", "Sales", "valid"),
    ("PAY-0020", "Koech Cheruiyot", "0729667788", "2,600", "B2C", "", "Sales", "valid"),
    ("PAY-0021", "Wafula Simiyu", "0740778899", "4,100", "B2C", "", "Field", "valid"),
    ("PAY-0022", "Nduta Wangari", "0741889900", "950", "B2C", "", "Field", "valid"),
    ("PAY-0023", "Kiplagat Kosgei", "0742990011", "3,900", "B2C", "", "Bonus", "valid"),
    ("PAY-0024", "Makena Kinya", "0743001122", "1,350", "B2C", "", "Admin", "valid"),
    ("PAY-0025", "Onyango Okoth", "0733123456", "2,500", "B2C", "", "Field",
     "warning: first issued by Airtel (numbers are portable)"),
    ("PAY-0026", "Tuskys Supplies Ltd", "600123", "45,000", "B2B", "", "Procurement", "valid: B2B short code"),
    ("PAY-0027", "Mama Mboga Traders", "5123456", "18,500", "B2B", "", "Procurement", "valid: 7-digit short code"),
    ("PAY-0028", "Kilonzo Mutiso", "0700000001", "1,000", "B2C", "", "Field",
     "sandbox rejects: 11 not an M-PESA customer"),
    ("PAY-0029", "Jelimo Chepngetich", "0700000002", "1,000", "B2C", "", "Field",
     "sandbox rejects: 12 account locked"),
    ("PAY-0030", "Ouko Were", "0700000009", "1,000", "B2C", "", "Field",
     "sandbox pays, then drops the connection: outcome unknown"),
    ("PAY-0031", "Gitau Mbugua", "07123", "1,000", "B2C", "", "Field", "error: number too short"),
    ("PAY-0032", "Wairimu Muthoni", "07I2345678", "1,000", "B2C", "", "Field", "error: letter I in the number"),
    ("PAY-0033", "Juma Hamisi", "+255 712 345 678", "1,000", "B2C", "", "Field", "error: a Tanzanian number"),
    ("PAY-0034", "Kerubo Nyaboke", "2.54712E+11", "1,000", "B2C", "", "Field",
     "error: Excel shortened the number and lost digits"),
    ("PAY-0035", "Mutiso Kioko", "0790112233", "1500.50", "B2C", "", "Sales", "error: cents"),
    ("PAY-0036", "Chelimo Jebet", "0791223344", "0", "B2C", "", "Sales", "error: zero"),
    ("PAY-0037", "Ochieng Opiyo", "0792334455", "-500", "B2C", "", "Sales", "error: negative"),
    ("PAY-0038", "Wanjiru Njambi", "0745445566", "five hundred", "B2C", "", "Sales", "error: words, not a number"),
    ("PAY-0039", "Rono Kiprono", "0746556677", "5", "B2C", "", "Admin", "error: below the B2C minimum"),
    ("PAY-0040", "Nekesa Nafula", "0768667788", "300,000", "B2C", "", "Bonus", "error: above the B2C maximum"),
    ("PAY-0041", "Kamande Gichuru", "0748778899", "1,000", "C2B", "", "Admin", "error: C2B is not a payout"),
    ("PAY-0042", "Awuor Anyango", "0748889900", "1,000", "", "", "Admin",
     "error unless a default product is given (--product B2C)"),
    ("PAY-0043", "Langat Kipkemoi", "0757112233", "1,000", "B2C", "17/09/2020 6:31 pm", "Field",
     "error: a time in the past"),
    ("PAY-0044", "Mumbua Ndunge", "0757223344", "1,000", "B2C", "04/13/2027", "Field",
     "error: month first (dates are read day first)"),
    ("PAY-0045", "Kipchumba Kirui", "0757334455", "1,000", "B2C", "31/02/2027 9:00 am", "Field",
     "error: 31 February does not exist"),
    ("PAY-0046", "Wangui Wachira", "0757445566", "1,000", "B2C", "2035-01-01T09:00:00+03:00", "Field",
     "error: more than 90 days ahead"),
    ("PAY-0001", "Wanjiku Kamau", "0712345678", "500", "B2C", "", "Field", "error: reference PAY-0001 repeated"),
    ("", "Odhiambo Otieno", "0758556677", "2,000", "B2C", "", "Field", "valid: no reference"),
    ("", "Odhiambo Otieno", "0758556677", "2,000", "B2C", "", "Field",
     "error: the same payout as the row above, with no reference to tell them apart"),
    ("PAY-0050", "Karanja Kimani", "0759667788", "250,000", "B2C", "", "Bonus", "error: daily limit (3 rows)"),
    ("PAY-0051", "Karanja Kimani", "0759667788", "249,000", "B2C", "", "Bonus", "error: daily limit (3 rows)"),
    ("PAY-0052", "Karanja Kimani", "0759667788", "2,000", "B2C", "", "Bonus", "error: daily limit (3 rows)"),
    ("PAY-0053", "Jua Kali Hardware", "0759778899", "10,000", "B2B", "", "Procurement",
     "error: B2B needs a short code, not a phone"),
]


def write_payouts() -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Payouts"
    ws.append(HEADERS)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in ROWS:
        ws.append(list(row))
    # Text cells keep their leading zeros when the analyst edits the sample in Excel.
    for cell in ws["C"][1:]:
        if isinstance(cell.value, str):
            cell.number_format = "@"
    for col, width in zip("ABCDEFGH", (11, 22, 20, 14, 9, 26, 13, 60), strict=True):
        ws.column_dimensions[col].width = width
    ws.freeze_panes = "A2"
    wb.save(HERE / "payouts.xlsx")
    with (HERE / "payouts.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADERS)
        writer.writerows(ROWS)


CUSTOMERS = [
    ("Wanjiku Kamau", "0712345678", "sale", 100213, "", 250),
    ("Otieno Odhiambo", "0722456789", "order", "", "100213x2;100214x1", ""),
    ("Achieng Atieno", "0713987654", "sale", 100215, "", 45),
    ("Kiprotich Kiptoo", "0714112233", "order", "", "100215x4", ""),
    ("Njeri Mwangi", "0715223344", "sale", 999999, "", 100),
    ("Mutua Musyoka", "0716334455", "sale", 100214, "", 1200),
]


def write_customers() -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Customers"
    ws.append(["Name", "Phone", "Service", "Product item", "Cart", "Amount"])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in CUSTOMERS:
        ws.append(list(row))
    wb.save(HERE / "customers.xlsx")


if __name__ == "__main__":
    write_payouts()
    write_customers()
    print(f"wrote {len(ROWS)} payout rows and {len(CUSTOMERS)} customers to {HERE}")
