"""``SSHResult``: the outcome of one command (or file operation) on one host."""

from __future__ import annotations

import msgspec

MAX_TEXT_WIDTH = 4
"""Bytes of memory one byte of output may take as text: a str stores every character in 1, 2 or 4
bytes, as its widest one needs. 4 once the output holds a character beyond U+FFFF (an emoji; random
bytes do), 2 for undecodable bytes (each becomes U+FFFD), at most 1 for any valid text without such
characters (ASCII 1, 'é' 1/2, '€' 2/3)."""

SKIPPED = "Skipped"
"""The error kind of a host a rollout never started (its failure budget ran out, or a canary failed):
``status=-1``, yet neither succeeded nor failed."""
STOPPED = "Stopped"
"""The error kind of a host whose command a rollout stopped (``on_exceeded="stop"``)."""


class SSHResult(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Output and exit status of a command, constructed and compared as upstream's
    ``SSHResult(stdout, stderr, status)``.

    ``status=-1`` means hussh itself failed; ``error`` then names the kind of failure
    (``"ConnectTimeout"``, ``"AuthenticationError"``...) and ``stderr`` starts with it and says why.
    ``error`` is empty whenever the command ran, whatever its exit status.
    """

    stdout: str = ""
    stderr: str = ""
    status: int = 0
    error: str = ""

    def __repr__(self) -> str:
        kind = f", error={self.error!r}" if self.error else ""
        return f"SSHResult(stdout={self.stdout!r}, stderr={self.stderr!r}, status={self.status!r}{kind})"

    __str__ = __repr__


class RawResult(msgspec.Struct, array_like=True, gc=False):
    """A result whose output is still the bytes received, decoded once where it is kept (the caller):
    a worker never holds a second copy of it as text, which for undecodable bytes is twice as large.

    ``error`` and ``reason``: a command stopped with its output kept (``"CommandTimeout"``,
    ``"OutputLimitExceeded"``) and why; ``AsyncConnection`` raises them, workers report them.
    """

    stdout: bytes = b""
    stderr: bytes = b""
    status: int = 0
    error: str = ""
    reason: str = ""

    def decoded(self) -> SSHResult:
        """The ``SSHResult``: text with each undecodable byte replaced by U+FFFD."""
        return SSHResult(text(self.stdout), text(self.stderr), self.status, self.error)

    def noted(self) -> RawResult:
        """A stopped command's result as a host reports it: status -1, stderr ending with why."""
        note = f"{self.error}: {self.reason}".encode()
        gap = b"" if not self.stderr or self.stderr.endswith(b"\n") else b"\n"
        return RawResult(self.stdout, self.stderr + gap + note, -1, self.error)


def text(data: bytes) -> str:
    """Output as text, undecodable bytes replaced (as upstream's results)."""
    return data.decode("utf-8", "replace")
