"""Where the BOHB phase's Pyro4 name server listens, who may join it, and the shared secret.

A name server bound to loopback (127.x, ::1, localhost) is reachable only from
this machine. Bound to any other address, anyone who can reach the port could
register a worker or call the dispatcher, so a shared secret is required: a
Pyro4 HMAC key, read from the environment variable AUTOML_BOHB_HMAC_KEY or from
the file named by AUTOML_BOHB_HMAC_KEY_FILE (never from the command line, where
other users see it in the process list). Every Pyro4 message of the run (name
server, master/dispatcher, local and remote workers) is then signed with it;
a worker with another key or none is refused.

hpbandster 0.7.4 creates its Pyro4 daemons and proxies deep inside its
NameServer, Dispatcher and Worker and takes no key, and the dispatcher hands
itself to workers as a callback proxy. So the key is installed process-wide
(`pyro_hmac`): every Pyro4 Daemon and Proxy of this process that has no key of
its own uses it. A proxy sent over the wire never carries the process key
(Pyro4 would otherwise serialise it in clear text into the message).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import Pyro4.core

from automl_pipeline.errors import InputError

HMAC_KEY_ENV = "AUTOML_BOHB_HMAC_KEY"
HMAC_KEY_FILE_ENV = "AUTOML_BOHB_HMAC_KEY_FILE"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class HmacKeyError(InputError):
    """No usable shared secret for a name server off loopback (the CLI exits with code 2)."""


def is_loopback(host: str | None) -> bool:
    """True when `host` names only this machine's loopback interface (127.0.0.0/8, ::1, localhost).
    None means hpbandster's default, localhost. A name that does not resolve counts as not loopback."""
    if host is None:
        return True
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def read_hmac_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The shared secret from AUTOML_BOHB_HMAC_KEY or the file named by AUTOML_BOHB_HMAC_KEY_FILE
    (surrounding whitespace stripped); None when neither is set. Raises HmacKeyError when both are
    set, the file cannot be read, or the key is empty."""
    environ = os.environ if environ is None else environ
    value, path = environ.get(HMAC_KEY_ENV), environ.get(HMAC_KEY_FILE_ENV)
    if value is not None and path is not None:
        raise HmacKeyError(HMAC_KEY_ENV, f"set either {HMAC_KEY_ENV} or {HMAC_KEY_FILE_ENV}, not both")
    if path is not None:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as err:
            raise HmacKeyError(HMAC_KEY_FILE_ENV, f"cannot read the key file {path}: {err.strerror or err}") from err
        source = f"the key file {path}"
    elif value is not None:
        key, source = value.strip().encode("utf-8"), HMAC_KEY_ENV
    else:
        return None
    if not key:
        raise HmacKeyError(HMAC_KEY_ENV, f"{source} is empty; the shared secret must not be empty")
    return key


def require_hmac_key(host: str | None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The shared secret for a name server bound to (or reached at) `host`.

    Returns the key from the environment when one is set (also on loopback), None on loopback
    without one. Raises HmacKeyError (an InputError: exit code 2, message naming
    AUTOML_BOHB_HMAC_KEY) when `host` is not loopback and no key is set, or the key is unusable.
    """
    key = read_hmac_key(environ)
    if key is None and not is_loopback(host):
        raise HmacKeyError(HMAC_KEY_ENV, (
            f"BOHB's name server address {host} is not loopback, so workers on other machines need a "
            f"shared secret: set {HMAC_KEY_ENV} (or {HMAC_KEY_FILE_ENV}, a file holding it) to the same "
            f"value for the main run and every `run.py worker`"))
    return key


@dataclass(frozen=True)
class NameServerOptions:
    """The name server a BOHB phase starts and the workers that must join it.

    host/port: where the Pyro4 name server binds (port 0: a free one); run_id: the hpbandster run
    the workers join; n_local_workers: in-process worker threads; min_n_workers: workers that must
    have registered before the first job (None: n_local_workers, at least 1); hmac_key: the shared
    secret (required off loopback, see require_hmac_key; not shown in repr).
    """

    host: str = "127.0.0.1"
    port: int = 0
    run_id: str = "bohb"
    n_local_workers: int = 1
    min_n_workers: int | None = None
    hmac_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.n_local_workers < 0:
            raise ValueError(f"n_local_workers must be >= 0, got {self.n_local_workers}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"nameserver port must be in [0, 65535], got {self.port}")
        if self.hmac_key is not None and not self.hmac_key:
            raise ValueError("hmac_key must not be empty")
        if self.hmac_key is None and not is_loopback(self.host):
            require_hmac_key(self.host, environ={})     # raises HmacKeyError with the explanation

    @classmethod
    def from_environment(cls, *, host: str = "127.0.0.1", environ: Mapping[str, str] | None = None,
                         **options) -> NameServerOptions:
        """Options whose hmac_key comes from the environment (require_hmac_key(host))."""
        return cls(host=host, hmac_key=require_hmac_key(host, environ), **options)

    @property
    def n_min(self) -> int:
        """Workers that must have registered before the first job is scheduled."""
        return max(1, self.n_local_workers) if self.min_n_workers is None else max(1, int(self.min_n_workers))


# --------------------------------------------------------------------------- process-wide Pyro4 key

_process_key: bytes | None = None
_patch_lock = threading.Lock()
_patched = False


def _install_key_fallback() -> None:
    """Make Pyro4 Daemons and Proxies without a key of their own use the process key (inert while
    it is None), and keep the process key out of serialised proxies. Idempotent."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        for cls in (Pyro4.core.Proxy, Pyro4.core.Daemon):
            own = cls._pyroHmacKey

            def effective(self, own=own):
                key = own.fget(self)
                return _process_key if key is None else key

            cls._pyroHmacKey = property(effective, own.fset, doc="the HMAC key: this object's, else the process's")
        proxy = Pyro4.core.Proxy
        dict_state, state = proxy.__getstate_for_dict__, proxy.__getstate__

        def without_process_key(getter):
            def wrapped(self):
                values = getter(self)
                if _process_key is None or proxy._pyroHmacKey.fget(self) != _process_key:
                    return values
                return (*values[:5], None, *values[6:])      # index 5: the HMAC key (Pyro4 4.x state)
            return wrapped

        proxy.__getstate_for_dict__ = without_process_key(dict_state)
        proxy.__getstate__ = without_process_key(state)
        _patched = True


@contextmanager
def pyro_hmac(key: bytes | None) -> Iterator[None]:
    """Within the block, every Pyro4 message of this process without a key of its own is signed
    and checked with `key` (None: unsigned, Pyro4's default). Restores the previous key on exit."""
    global _process_key
    _install_key_fallback()
    previous, _process_key = _process_key, key
    try:
        yield
    finally:
        _process_key = previous
