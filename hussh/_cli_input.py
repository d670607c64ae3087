"""What ``hussh run`` gives every host's command besides the command itself: stdin bytes, and sudo.

stdin: ``--stdin FILE`` sends the file; otherwise hussh's own stdin when it is not a terminal
(clush's behaviour), read to end of file once before anything starts (every host gets the same
bytes) and at most ``MAX_STDIN`` bytes; ``--nostdin`` sends nothing. Every command then sees end
of file. sudo: ``--sudo`` (clush: ``-m sudo``); the password comes from ``$HUSSH_SUDO_PASSWORD``,
else is asked once on the terminal (an empty answer: none, for NOPASSWD rules); never an option.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import BinaryIO, TypedDict

from ._cli_args import UsageError
from .multi_conn import MAX_STDIN

SUDO_PASSWORD_ENV = "HUSSH_SUDO_PASSWORD"


class HowToRun(TypedDict):
    """``MultiConnection.execute``'s keywords for the command's stdin and sudo."""

    input: bytes
    sudo: bool
    sudo_password: str | None


def how_to_run(args: argparse.Namespace) -> HowToRun:
    """The stdin and sudo keywords for ``run``, asking for the sudo password first if needed."""
    sudo = bool(args.sudo or args.run_mode == "sudo")
    return HowToRun(input=stdin_of(args), sudo=sudo, sudo_password=sudo_password() if sudo else None)


def stdin_of(args: argparse.Namespace) -> bytes:
    """The bytes every command gets on stdin (then end of file)."""
    if args.stdin_file is not None:
        if args.stdin_file == "-":
            return _read_bounded(sys.stdin.buffer, "stdin")
        try:
            with open(args.stdin_file, "rb") as handle:
                return _read_bounded(handle, args.stdin_file)
        except OSError as exc:
            raise UsageError(f"hussh: cannot read {args.stdin_file}: {exc.strerror}") from None
    if args.no_stdin or sys.stdin is None or _is_terminal(sys.stdin.fileno()):
        return b""
    return _read_bounded(sys.stdin.buffer, "stdin")


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:  # closed
        return True


def _read_bounded(stream: BinaryIO, name: str) -> bytes:
    """All of ``stream``, refused past ``MAX_STDIN`` bytes (it is held in memory and sent to every worker)."""
    data = stream.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise UsageError(f"hussh: {name} holds more than {MAX_STDIN} bytes, the most sent to the hosts' commands "
                         "(copy a large file with 'hussh put' and redirect the command's stdin from it)")
    return data


def sudo_password() -> str | None:
    """``$HUSSH_SUDO_PASSWORD``, else asked once on the terminal; ``None`` (no password) without either."""
    if SUDO_PASSWORD_ENV in os.environ:
        return os.environ[SUDO_PASSWORD_ENV] or None
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))  # getpass would read stdin (the commands' input) without one
    except OSError:
        return None
    try:
        return getpass.getpass("sudo password for the hosts (empty: none): ") or None
    except (EOFError, OSError) as exc:
        raise UsageError(f"hussh: --sudo could not read a password: {exc or 'end of input'}") from None
