"""Broker credentials and ACL: one MQTT user per sensor, gateway and worker (DESIGN.md §1, §7).

`infrawatch broker add-sensor ID` (and `add-gateway`, `add-worker`) create the user in Mosquitto's
password file and its ACL entry, then ask a running broker to re-read both (SIGHUP through
its pid, when given). Passwords are generated here, printed once, and never stored in clear.

The password file holds Mosquitto 2's PBKDF2-SHA512 hashes (`$7$` format, as `mosquitto_passwd`
writes them); computing them here keeps adding a few hundred simulated sensors to milliseconds
instead of one `mosquitto_passwd` process each.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from infrawatch.config import Settings
from infrawatch.errors import UserError

Role = Literal["sensor", "gateway", "worker"]
# An id is a whole topic level and a broker username: no wildcards, separators or spaces.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ITERATIONS = 101  # mosquitto_passwd's default for $7$


class BrokerAdminError(UserError, ValueError):
    """A bad id or an unusable password/ACL file; the message says what to do."""


def check_id(ident: str, what: str = "id") -> str:
    if not ID_PATTERN.match(ident):
        raise BrokerAdminError(
            f"{what} {ident!r} is not usable as an MQTT username and topic level: "
            "use 1–64 of A–Z a–z 0–9 . _ - (starting with a letter or digit)"
        )
    return ident


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto 2's `$7$` hash: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS, dklen=64)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_lines(user: str, role: Role) -> list[str]:
    """The ACL stanza of one user: sensors and gateways may publish only under their own id."""
    if role == "sensor":
        topics = [f"topic write infrawatch/+/+/{user}/telemetry"]
    elif role == "gateway":
        topics = [f"topic write infrawatch/+/gateway/{user}/batch"]
    else:  # worker: reads every reading, publishes alerts
        topics = [
            "topic read infrawatch/+/+/+/telemetry",
            "topic read infrawatch/+/gateway/+/batch",
            "topic readwrite infrawatch/+/alerts/#",
        ]
    return [f"user {user}", *topics]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_passwd(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            user, h = line.split(":", 1)
            out[user] = h
    return out


def _read_acl(path: Path) -> dict[str, list[str]]:
    """The ACL file as user → its stanza (every stanza starts with `user NAME`)."""
    stanzas: dict[str, list[str]] = {}
    current: list[str] | None = None
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("user "):
                current = stanzas.setdefault(line[5:].strip(), [])
                current.clear()
                current.append(line)
            elif line.strip() and current is not None:
                current.append(line)
    return stanzas


def add_users(
    settings: Settings, users: Iterable[tuple[str, Role]], *, password: str | None = None
) -> dict[str, str]:
    """Create (or re-key) users; returns user → new password. One locked rewrite for all of them."""
    b = settings.broker
    created: dict[str, str] = {}
    with _locked(b.password_file):
        pw_file = _read_passwd(b.password_file)
        acl = _read_acl(b.acl_file)
        for user, role in users:
            check_id(user, f"{role} id")
            pw = password if password is not None else secrets.token_urlsafe(18)
            pw_file[user] = hash_password(pw)
            acl[user] = acl_lines(user, role)
            created[user] = pw
        _atomic_write(b.password_file, "".join(f"{u}:{h}\n" for u, h in pw_file.items()))
        _atomic_write(b.acl_file, "".join("\n".join(lines) + "\n\n" for lines in acl.values()))
    return created


def add_sensor(settings: Settings, sensor_id: str, *, password: str | None = None) -> str:
    return add_users(settings, [(sensor_id, "sensor")], password=password)[sensor_id]


def add_gateway(settings: Settings, gateway_id: str, *, password: str | None = None) -> str:
    return add_users(settings, [(gateway_id, "gateway")], password=password)[gateway_id]


def add_worker(settings: Settings, user: str, *, password: str | None = None) -> str:
    return add_users(settings, [(user, "worker")], password=password)[user]


def remove_user(settings: Settings, user: str) -> bool:
    """Delete a user and its ACL stanza; False if it did not exist."""
    b = settings.broker
    with _locked(b.password_file):
        pw_file = _read_passwd(b.password_file)
        acl = _read_acl(b.acl_file)
        found = pw_file.pop(user, None) is not None
        acl.pop(user, None)
        _atomic_write(b.password_file, "".join(f"{u}:{h}\n" for u, h in pw_file.items()))
        _atomic_write(b.acl_file, "".join("\n".join(lines) + "\n\n" for lines in acl.values()))
    return found


def reload_broker(pid_file: Path) -> bool:
    """SIGHUP the broker whose pid is in `pid_file` so it re-reads passwords and ACL."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 1)
    except (OSError, ValueError):
        return False
    return True
