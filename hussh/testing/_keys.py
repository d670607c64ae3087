"""SSH key pairs written in-process (no ssh-keygen per key): a 1000-node fleet needs 1000 host keys."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

_PEM = serialization.Encoding.PEM
_OPENSSH = serialization.PrivateFormat.OpenSSH


def _write(path: Path, private: bytes, public: bytes, comment: str) -> str:
    """Write ``path`` (0600, as sshd demands of host keys) and ``path.pub``; return the public line."""
    path.touch(mode=0o600)
    path.write_bytes(private)
    line = f"{public.decode()} {comment}"
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def write_ed25519(path: Path, comment: str) -> str:
    """Write an unencrypted ed25519 key pair in OpenSSH format; return ``type base64 comment``."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(_PEM, _OPENSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return _write(path, private, public, comment)


def write_encrypted_rsa(path: Path, passphrase: str, comment: str) -> str:
    """Write a 2048-bit RSA key pair encrypted like ssh-keygen does (bcrypt KDF, 16 rounds)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(_PEM, _OPENSSH, serialization.BestAvailableEncryption(passphrase.encode()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return _write(path, private, public, comment)


def public_key(path: Path) -> str:
    """The ``type base64`` part of ``path``'s ``.pub`` file."""
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])
