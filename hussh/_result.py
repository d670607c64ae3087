"""``SSHResult``: the outcome of one command on one host, also the frame that crosses worker pipes."""

from __future__ import annotations

import msgspec


class SSHResult(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Output and exit status of a command; ``status=-1`` means hussh itself failed (reason in ``stderr``)."""

    stdout: str = ""
    stderr: str = ""
    status: int = 0
