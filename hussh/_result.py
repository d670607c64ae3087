"""``SSHResult``: the outcome of one command (or file operation) on one host."""

from __future__ import annotations

import msgspec


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
