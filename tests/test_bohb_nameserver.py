"""BOHB name server options and the shared secret (Pyro4 HMAC key) required off loopback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from automl_pipeline.bohb.nameserver import (
    HMAC_KEY_ENV,
    HMAC_KEY_FILE_ENV,
    HmacKeyError,
    NameServerOptions,
    is_loopback,
    pyro_hmac,
    read_hmac_key,
    require_hmac_key,
)
from automl_pipeline.errors import InputError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("host,loopback", [
    (None, True), ("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("192.0.2.7", False), ("::", False),
    ("no-such-host.invalid", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_key_from_variable_or_file(tmp_path):
    assert read_hmac_key({}) is None
    assert read_hmac_key({HMAC_KEY_ENV: " s3cret\n"}) == b"s3cret"
    key_file = tmp_path / "key"
    key_file.write_bytes(b"from-file\n")
    assert read_hmac_key({HMAC_KEY_FILE_ENV: str(key_file)}) == b"from-file"


@pytest.mark.parametrize("environ,message", [
    ({HMAC_KEY_ENV: "a", HMAC_KEY_FILE_ENV: "/x"}, "not both"),
    ({HMAC_KEY_ENV: "  "}, "empty"),
    ({HMAC_KEY_FILE_ENV: "/nonexistent/key"}, "cannot read")])
def test_unusable_key_settings_are_refused(environ, message):
    with pytest.raises(HmacKeyError, match=message):
        read_hmac_key(environ)


def test_key_is_required_off_loopback_only():
    assert require_hmac_key("127.0.0.1", {}) is None
    assert require_hmac_key("127.0.0.1", {HMAC_KEY_ENV: "k"}) == b"k"        # used when set, also locally
    assert require_hmac_key("0.0.0.0", {HMAC_KEY_ENV: "k"}) == b"k"
    with pytest.raises(HmacKeyError) as caught:
        require_hmac_key("0.0.0.0", {})
    assert isinstance(caught.value, InputError) and caught.value.exit_code == 2
    assert str(caught.value).startswith(f"{HMAC_KEY_ENV}: ") and HMAC_KEY_FILE_ENV in str(caught.value)


def test_options_refuse_an_open_name_server_and_hide_the_key():
    with pytest.raises(HmacKeyError):
        NameServerOptions(host="0.0.0.0")
    options = NameServerOptions.from_environment(host="0.0.0.0", environ={HMAC_KEY_ENV: "k"}, n_local_workers=0)
    assert options.hmac_key == b"k" and "k'" not in repr(options) and options.n_min == 1
    assert NameServerOptions(n_local_workers=3).n_min == 3
    assert NameServerOptions(n_local_workers=0, min_n_workers=2).n_min == 2


def test_run_bohb_off_loopback_without_key_refuses_before_starting(tmp_path, monkeypatch):
    from automl_pipeline.bohb.search import BohbOptions, run_bohb
    monkeypatch.delenv(HMAC_KEY_ENV, raising=False)
    monkeypatch.delenv(HMAC_KEY_FILE_ENV, raising=False)
    with pytest.raises(HmacKeyError, match=HMAC_KEY_ENV):
        run_bohb(None, config_space=None, options=BohbOptions(min_budget=1, max_budget=3, nameserver_host="0.0.0.0"),
                 time_left=lambda: 5.0, out_dir=tmp_path, log=lambda s: None)
    assert not (tmp_path / "bohb").exists()


def test_process_key_signs_messages_but_never_travels_in_a_proxy():
    import Pyro4
    import Pyro4.util

    class Echo:
        @Pyro4.expose
        def echo(self, x):
            return x

    serpent = Pyro4.util.get_serializer("serpent")
    with pyro_hmac(b"top-secret-key"):
        daemon = Pyro4.Daemon(host="127.0.0.1")
        try:
            echo = Echo()
            daemon.register(echo)
            proxy = daemon.proxyFor(echo)
            assert proxy._pyroHmacKey == b"top-secret-key" and daemon._pyroHmacKey == b"top-secret-key"
            wire = serpent.dumps(proxy)
            assert b"top-secret-key" not in wire and b"dG9wLXNlY3JldC1rZXk" not in wire   # plain or base64
        finally:
            daemon.close()
    assert Pyro4.core.Proxy("PYRO:x@127.0.0.1:1")._pyroHmacKey is None          # restored: unsigned again


def test_worker_command_without_key_for_a_remote_name_server_exits_2():
    env = {k: v for k, v in os.environ.items() if k not in (HMAC_KEY_ENV, HMAC_KEY_FILE_ENV)}
    proc = subprocess.run([sys.executable, "run.py", "worker", "--run-id", "r", "--nameserver", "192.0.2.7",
                           "--nameserver-port", "9090", "--max-image-side", "8", "--time-limit", "5"], check=False,
                          cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert HMAC_KEY_ENV in proc.stderr and "Traceback" not in proc.stderr


def test_main_run_with_an_open_name_server_and_no_key_exits_2_before_writing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (HMAC_KEY_ENV, HMAC_KEY_FILE_ENV)}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "run.py", "--time-limit", "30", "--nameserver-host", "0.0.0.0",
                           "--output-dir", str(out)], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert HMAC_KEY_ENV in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
