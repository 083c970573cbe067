"""Settings from the environment and .env, and the sign / sandbox commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from mipay_bulk import ConfigurationError, Settings
from mipay_bulk.cli import main

from .conftest import TEST_API_KEY, TEST_PASSWORD

ENV = {
    "MIPAY_USERNAME": "analyst",
    "MIPAY_PASSWORD": TEST_PASSWORD,
    "MIPAY_API_KEY": TEST_API_KEY,
    "MIPAY_IP_ADDRESS": "197.248.10.20",
}


def test_settings_from_env_and_defaults():
    s = Settings.from_env(ENV, dotenv=None)
    assert s.gateway_url == "https://gomipay.com"
    assert s.username == "analyst" and s.password.reveal() == TEST_PASSWORD
    assert TEST_PASSWORD not in repr(s) and TEST_API_KEY not in repr(s) and TEST_PASSWORD not in str(s)


def test_explicit_beats_env_beats_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MIPAY_USERNAME=from-file\nMIPAY_GATEWAY_URL=http://127.0.0.1:9/\n"
                      f"MIPAY_PASSWORD={TEST_PASSWORD}\nMIPAY_API_KEY={TEST_API_KEY}\nMIPAY_IP_ADDRESS=::1\n")
    s = Settings.from_env({"MIPAY_USERNAME": "from-env"}, dotenv=dotenv)
    assert (s.username, s.gateway_url, s.ip_address) == ("from-env", "http://127.0.0.1:9/", "::1")
    s = Settings.from_env({"MIPAY_USERNAME": "from-env"}, dotenv=dotenv, username="explicit")
    assert s.username == "explicit"


@pytest.mark.parametrize("missing", sorted(ENV))
def test_missing_credential_names_the_variable(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env, dotenv=None)
    first = str(info.value).splitlines()[0]
    assert first == f"{missing} is not set"
    assert info.value.hint and ".env" in info.value.hint


def test_sign_command_prints_string_and_hash_never_the_secrets(tmp_path, capsys, monkeypatch):
    body = {"CHID": 13, "gateway_host": "gomipay.com", "lat": "0.0", "lng": "0.0",
            "timestamp": 1789652460, "ip_address": "197.248.10.20", "MSISDN": "254712345678",
            "amount": 1500, "product_id": "B2C", "scheduled_send": "17/09/2026 6:31 pm",
            "credentials": {"username": "analyst", "password": TEST_PASSWORD},
            "sec_hash": "MP2L2X4W06F4aJlyMgVtYplLcvKUSqCylT6Q9T13Clo="}
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIPAY_API_KEY", "bWlwYXktc2FuZGJveC1zaGFyZWQtc2VjcmV0")
    assert main(["sign", str(path)]) == 0
    out = capsys.readouterr().out
    assert "chid=13&gateway_host=gomipay.com" in out
    assert "MP2L2X4W06F4aJlyMgVtYplLcvKUSqCylT6Q9T13Clo=" in out and "matches" in out
    assert TEST_PASSWORD not in out and "bWlwYXktc2FuZGJveC1zaGFyZWQtc2VjcmV0" not in out


def test_sign_command_without_key_or_with_bad_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIPAY_API_KEY", raising=False)
    (tmp_path / "b.json").write_text("{}")
    assert main(["sign", "b.json"]) == 2
    assert "MIPAY_API_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("MIPAY_API_KEY", TEST_API_KEY)
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["sign", "bad.json"]) == 2
    assert main(["sign", "missing.json"]) == 2
    err = capsys.readouterr().err
    assert "bad.json: not JSON" in err and "missing.json: cannot read it" in err
    assert "Traceback" not in err


def test_sandbox_runs_as_its_own_process(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mipay_bulk", "sandbox", "--port", str(port), "--quiet"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        deadline = time.time() + 10
        while True:
            try:
                assert requests.get(f"http://127.0.0.1:{port}/_sandbox/ledger", timeout=2).json() == []
                break
            except requests.ConnectionError:
                assert time.time() < deadline
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
