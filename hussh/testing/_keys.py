"""SSH key pairs written in-process (no ssh-keygen per key): a 1000-node fleet needs 1000 host keys.

``KeptHostKeys`` keeps a named fleet's host keys across ``down`` and ``up``: the keys that ssh and
hussh recorded in ``~/.ssh/known_hosts`` for its endpoints stay valid. They live in a private
directory of this user (``$XDG_STATE_HOME/hussh/fleet-host-keys/NAME``, else under
``~/.local/state``), which is used only when it is a real directory of this uid that no one else
may enter; each key is read and written through that directory's descriptor, mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ._errors import FleetError
from ._registry import store_private

_PEM = serialization.Encoding.PEM
_OPENSSH = serialization.PrivateFormat.OpenSSH
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_STORE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,100}")
_KEY_NAME = re.compile(r"host_ed25519_[0-9]{1,6}")
MAX_KEY = 1 << 16  # bytes: an ed25519 private key file is about 400


def _write(path: Path, private: bytes, public: bytes, comment: str) -> str:
    """Write ``path`` (0600, as sshd demands of host keys) and ``path.pub``; return the public line."""
    path.touch(mode=0o600)
    path.write_bytes(private)
    line = f"{public.decode()} {comment}"
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def _public(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def write_ed25519(path: Path, comment: str) -> str:
    """Write an unencrypted ed25519 key pair in OpenSSH format; return ``type base64 comment``."""
    key = ed25519.Ed25519PrivateKey.generate()
    return _write(path, key.private_bytes(_PEM, _OPENSSH, serialization.NoEncryption()), _public(key), comment)


def write_encrypted_rsa(path: Path, passphrase: str, comment: str) -> str:
    """Write a 2048-bit RSA key pair encrypted like ssh-keygen does (bcrypt KDF, 16 rounds)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(_PEM, _OPENSSH, serialization.BestAvailableEncryption(passphrase.encode()))
    return _write(path, private, _public(key), comment)


def public_key(path: Path) -> str:
    """The ``type base64`` part of ``path``'s ``.pub`` file."""
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def key_store() -> Path:
    """Where named fleets keep their host keys: ``$XDG_STATE_HOME`` (an absolute path), else ``~/.local/state``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "hussh" / "fleet-host-keys"


class KeptHostKeys:
    """The host keys of the fleet called ``name``: made on its first ``up``, then reused by every later one."""

    def __init__(self, name: str) -> None:
        if not _STORE_NAME.fullmatch(name):
            raise FleetError(f"{name!r} cannot name kept host keys: lowercase letters, digits, '.', '_', '-'")
        self.path = key_store() / name

    def write(self, path: Path, comment: str) -> str:
        """Write the kept key called ``path.name`` to ``path`` and ``path.pub`` (made and kept the first
        time); return the public line, as ``write_ed25519`` does."""
        if not _KEY_NAME.fullmatch(path.name):
            raise FleetError(f"{path.name!r} is not a host key name")
        with self._directory() as directory:
            private = self._read(directory, path.name)
            if private is None:
                key = ed25519.Ed25519PrivateKey.generate()
                private = key.private_bytes(_PEM, _OPENSSH, serialization.NoEncryption())
                store_private(directory, path.name, private)
            else:
                key = self._load(path.name, private)
        return _write(path, private, _public(key), comment)

    def _refusal(self, what: Path, problem: str) -> FleetError:
        return FleetError(f"kept host keys {what} {problem}; hussh.testing uses them only as files and "
                          f"directories of uid {os.getuid()} that no one else may read: remove {self.path} "
                          "(the fleet then gets new host keys) and try again")

    @contextlib.contextmanager
    def _directory(self) -> Iterator[int]:
        """A descriptor of the checked private directory (created 0700 on first use)."""
        self.path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # hussh/, the journal's too: private
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            self.path.mkdir(mode=0o700)
        try:
            fd = os.open(self.path, _OPEN_DIR)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refusal(self.path, "is a symbolic link or not a directory") from None
            raise self._refusal(self.path, f"cannot be opened ({error.strerror})") from None
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid() or info.st_mode & 0o077:
                raise self._refusal(self.path, f"belongs to uid {info.st_uid} with mode "
                                               f"{stat.S_IMODE(info.st_mode):04o}")
            yield fd
        finally:
            os.close(fd)

    def _read(self, directory: int, name: str) -> bytes | None:
        """The kept private key ``name`` (None: not made yet), or FleetError when it cannot be trusted."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._refusal(self.path / name, f"cannot be opened ({error.strerror})") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
                raise self._refusal(self.path / name, f"is not a regular file of this uid with mode 0600 "
                                                      f"(mode {stat.S_IMODE(info.st_mode):04o}, uid {info.st_uid})")
            return file.read(MAX_KEY + 1)

    def _load(self, name: str, private: bytes) -> ed25519.Ed25519PrivateKey:
        try:
            key = serialization.load_ssh_private_key(private, None)
        except (ValueError, TypeError) as error:
            raise self._refusal(self.path / name, f"is not an unencrypted OpenSSH private key ({error})") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise self._refusal(self.path / name, "is not an ed25519 key")
        return key
