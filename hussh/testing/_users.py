"""The loopback fleet's login users, who exist only inside the fleet's mount namespace.

The host's /etc/passwd, /etc/shadow and /etc/group are copied, the fleet's users appended, and
the copies laid over /etc in the namespace where the fleet's sshd run (see ``_namespace``): the
machine's own sshd (or su, or login) never sees these users, so their well-known password opens
nothing outside the fleet. Logins stay cheap on purpose: a SHA-512 hash of 1000 rounds (well under
a millisecond; yescrypt costs ~18 ms) and ``/bin/sh`` reading no rc files.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from ._errors import FleetError

PASSWORD_USER = "hussh"
PASSWORD = "hussh"
KEY_USER = "hussh-key"
KEY_PASSPHRASE = "hussh-passphrase"
# crypt("hussh", "$6$rounds=1000$husshfleetsalt00$"): a constant, so no crypt library is needed.
PASSWORD_HASH = (
    "$6$rounds=1000$husshfleetsalt00$84DBpUZSSbstWSgR7s5s62/rnKRvcsgF4.F3zG8UmTOABcJcJdJegU9XdY/"
    "t96zVrg1PkX59ZqHeeFTWZsTbV/"
)
# "*": no password login, yet not locked ("!"), which would refuse key logins too under UsePAM no.
NO_PASSWORD = "*"
# uid = UID_BASE + 2 * (pid of the namespace's holder process) + n: unique among live fleets (no two
# live processes share a pid), far above the ranges that useradd and /etc/subuid hand out.
UID_BASE = 1_900_000_000
HOMES = Path("/home")  # inside the namespace, the fleet's own directory is mounted here


@dataclass(frozen=True)
class FleetUser:
    """One login user of the fleet (its group has the same name and id)."""

    name: str
    uid: int
    home: Path
    password_hash: str


def fleet_users(holder_pid: int) -> list[FleetUser]:
    """The fleet's users for the namespace held by ``holder_pid``, at home in its /home."""
    users = [
        FleetUser(name, UID_BASE + 2 * holder_pid + n, HOMES / name, password_hash)
        for n, (name, password_hash) in enumerate(((PASSWORD_USER, PASSWORD_HASH), (KEY_USER, NO_PASSWORD)))
    ]
    for user in users:
        if _id_taken(user.uid):
            raise FleetError(f"uid/gid {user.uid} is taken on this machine; cannot add fleet user {user.name}")
    return users


def _id_taken(number: int) -> bool:
    """Tell whether ``number`` is a uid or gid on the host, or inside a subordinate id range."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(number)
            return True
        except KeyError:
            pass
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        for line in path.read_text().splitlines() if path.exists() else []:
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                if int(fields[1]) <= number < int(fields[1]) + int(fields[2]):
                    return True
    return False


def write_etc(users: list[FleetUser], etc: Path, shadow_day: int) -> list[Path]:
    """Write the namespace's versions of the account files (and nsswitch.conf) into ``etc``.

    Host entries with a fleet user's name are dropped, so a leftover account on the host cannot
    shadow the fleet's. ``nsswitch.conf`` reads accounts from files only, whatever the host says.
    """
    names = {u.name for u in users}
    etc.mkdir(mode=0o755)
    lines = {
        "passwd": [f"{u.name}:x:{u.uid}:{u.uid}:hussh fleet:{u.home}:/bin/sh" for u in users],
        "shadow": [f"{u.name}:{u.password_hash}:{shadow_day}:0:99999:7:::" for u in users],
        "group": [f"{u.name}:x:{u.uid}:" for u in users],
    }
    copies: list[Path] = []
    for name, extra in lines.items():
        host = Path("/etc", name).read_text().splitlines()
        kept = [line for line in host if line.split(":", 1)[0] not in names]
        copy = etc / name
        copy.touch(mode=0o600 if name == "shadow" else 0o644)
        copy.write_text("\n".join(kept + extra) + "\n")
        copies.append(copy)
    source = Path("/etc/nsswitch.conf")
    if source.exists():  # without one, glibc reads files anyway
        copies.append(_write_nsswitch(source, etc / "nsswitch.conf"))
    copies.append(_write_sudoers(etc / "sudoers"))
    return copies


def _write_sudoers(path: Path) -> Path:
    """The host's sudoers plus the fleet's rules: ``hussh`` (with its password) may run commands as
    ``hussh-key``, which may run them as ``hussh`` without one (NOPASSWD), each by default. Never as
    root: the password is well known and sudo's root is the machine's own."""
    source = Path("/etc/sudoers")
    host = source.read_text() if source.exists() else ""
    both = f"{PASSWORD_USER}, {KEY_USER}"
    fleet = [f"Defaults:{both} timestamp_timeout=0, lecture=never, !mail_badpass",  # every call asks anew
             f"Defaults:{PASSWORD_USER} runas_default={KEY_USER}",
             f"Defaults:{KEY_USER} runas_default={PASSWORD_USER}",
             f"{PASSWORD_USER} ALL=({KEY_USER}) ALL",
             f"{KEY_USER} ALL=({PASSWORD_USER}) NOPASSWD: ALL"]
    path.touch(mode=0o440)  # sudo refuses a sudoers file others may write
    path.write_text(host.rstrip("\n") + "\n" + "\n".join(fleet) + "\n")
    return path


def _write_nsswitch(source: Path, path: Path) -> Path:
    """``source`` with passwd, group and shadow read from files only."""
    host = source.read_text().splitlines()
    databases = ("passwd", "group", "shadow")
    kept = [line for line in host if line.split(":", 1)[0].strip() not in databases]
    path.write_text("\n".join(kept + [f"{db}: files" for db in databases]) + "\n")
    return path


def make_homes(users: list[FleetUser], root: Path) -> None:
    """Create each user's home under ``root`` (the namespace's /home), owned by the user."""
    root.mkdir(mode=0o755)
    for user in users:
        home = root / user.home.relative_to(HOMES)
        home.mkdir(mode=0o755)
        os.chown(home, user.uid, user.uid)
