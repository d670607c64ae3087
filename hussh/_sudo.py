"""Running a command through ``sudo`` and answering its password prompt, once, without showing it.

The command becomes ``sudo -S -p PROMPT -- sh -c 'printf READY >&2; RELAY' hussh-sudo CMD``
(``-n`` instead of ``-S -p PROMPT`` when no password was given), where ``PROMPT`` and ``READY``
carry a random token of the call. Until ``READY`` arrives on stderr, stderr is sudo's own: the
password is written once, when ``PROMPT`` appears, and never otherwise (so a NOPASSWD rule never
sees it on the command's stdin); a second ``PROMPT`` means sudo refused it. ``READY`` means sudo
let the command start: what came before (prompt, lecture, warnings) is dropped and the command's
stdin may flow. A command that ends before ``READY`` never ran: sudo refused (``SudoError``).
"""

from __future__ import annotations

import secrets
import shlex

_RELAY = ("trap 'trap \"\" TERM; kill -TERM 0; sleep 1; kill -KILL 0' TERM; "
          "exec 3<&0; sh -c \"$1\" <&3 3<&- & wait $!")
"""Run the command as a child and, on TERM, end its whole process group (TERM, then KILL a second later).
sudo relays TERM to its child alone, and cannot relay KILL; OpenSSH's ``killpg``, sent as the login
user, cannot reach a command sudo runs as another. ``<&3``: a background command's stdin would
otherwise be /dev/null."""

PREAMBLE_LIMIT = 64 << 10
"""Bytes sudo may write to stderr before the command starts; more is refused (a host flooding us)."""


def check_password(password: str | None) -> None:
    """Refuse a password sudo could not read back as one line (it reads up to the first newline)."""
    if password is not None and ("\n" in password or "\r" in password or "\0" in password):
        raise ValueError("sudo_password cannot contain a newline, carriage return or NUL: sudo reads one line")


class SudoGate:
    """Watches sudo's stderr before the command starts; says when to send the password and when it ran."""

    def __init__(self, password: str | None) -> None:
        token = secrets.token_hex(8)
        self.prompt = f"[hussh-sudo-{token}] password:".encode()
        self.ready = f"[hussh-sudo-{token}] ready\n".encode()
        self.password = password
        self.answered = False
        self.started = False  # READY seen: everything after it is the command's own stderr
        self.refused = ""  # why sudo refused, once it did
        self.preamble = bytearray()

    def wrap(self, command: str) -> str:
        """``command`` run through sudo, announcing on stderr that sudo let it start."""
        flags = f"-S -p {shlex.quote(self.prompt.decode())}" if self.password is not None else "-n"
        inner = f"printf '%s\\n' {shlex.quote(self.ready.decode().rstrip())} >&2; {_RELAY}"
        return f"sudo {flags} -- sh -c {shlex.quote(inner)} hussh-sudo {shlex.quote(command)}"

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Take stderr bytes received before the command started: (the command's stderr in them, whether to
        send the password now). Sets ``refused`` on a second prompt or a flood."""
        self.preamble += data
        answer = False
        while (at := self.preamble.find(self.prompt)) >= 0:
            del self.preamble[at:at + len(self.prompt)]
            if self.password is None or self.answered:
                self.refused = "sudo refused the password" if self.answered else "sudo asked for a password"
                return b"", False
            self.answered = answer = True
        at = self.preamble.find(self.ready)
        if at >= 0:
            rest = bytes(self.preamble[at + len(self.ready):])
            self.started, self.preamble = True, bytearray()
            return rest, answer
        if len(self.preamble) > PREAMBLE_LIMIT:
            self.refused = f"sudo wrote more than {PREAMBLE_LIMIT} bytes before the command started"
        return b"", answer

    def answer(self) -> bytes:
        """The line to write on sudo's stdin."""
        assert self.password is not None
        return self.password.encode() + b"\n"

    def reason(self, host: str) -> str:
        """Why the command did not run on ``host``: sudo's words (never the password), one line."""
        said = self.preamble.decode("utf-8", "replace")
        if self.password:
            said = said.replace(self.password, "***")
        said = " ".join(said.split())[:500]
        why = self.refused or ("sudo did not start the command" if not self.answered
                               else "sudo refused the password or the command")
        return f"{why} on {host}" + (f": {said}" if said else "")
