"""The public face: __all__ names exactly what an analyst imports, and each name resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mipay_bulk

EXPECTED = {
    "load_payouts", "validate", "run_payouts", "results", "write_report", "MipayClient", "Sandbox", "Settings",
}


def test_all_names_the_notebook_api_and_every_name_exists():
    assert EXPECTED <= set(mipay_bulk.__all__)
    for name in mipay_bulk.__all__:
        assert getattr(mipay_bulk, name) is not None, name
    public = {n for n in vars(mipay_bulk) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(mipay_bulk, n)).__name__ == "module"}
    # Nothing public beyond __all__ except the submodules themselves.
    assert public - modules - {"annotations"} <= set(mipay_bulk.__all__)


def test_main_module_is_two_lines():
    text = (Path(mipay_bulk.__file__).parent / "__main__.py").read_text().strip().splitlines()
    assert len([line for line in text if line.strip()]) == 2


def test_ruff_is_clean():
    root = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-m", "ruff", "check", str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
