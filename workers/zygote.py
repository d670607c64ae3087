"""The zygote: a single-threaded interpreter that forks workers on request (see ``hussh.workers._spawn``).

Protocol on the Unix socket (SOCK_SEQPACKET) given as ``argv[1]``: the parent sends ``b"F"``
with two descriptors (the worker's request and reply pipe ends); the zygote forks a worker on
them and answers ``b"P<pid>"`` with a pidfd of the worker; whenever a worker exits it sends
``b"X"`` + (pid, wait status). End of file on the socket (the parent exited) ends the zygote;
its workers then see end of file on their own pipes and stop.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys

from . import main as worker_main  # the point of a zygote: workers start with this already imported
from ._spawn import _EXIT, close_all_but


def serve(sock: socket.socket) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD writes to the wakeup fd
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                message, fds, _, _ = socket.recv_fds(sock, 16, 2)
                if not message:
                    return
                if message == b"F" and len(fds) == 2:
                    _fork(sock, wake_r, wake_w, *fds)
                for fd in fds:
                    os.close(fd)
            else:
                os.read(wake_r, 4096)
        _reap(sock)


def _fork(sock: socket.socket, wake_r: int, wake_w: int, to_child: int, from_child: int) -> None:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            close_all_but(to_child, from_child)
            worker_main.run(to_child, from_child)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    pidfd = os.pidfd_open(pid)  # before any reaping: the pid cannot have been recycled yet
    try:
        socket.send_fds(sock, [b"P%d" % pid], [pidfd])
    finally:
        os.close(pidfd)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            sock.send(b"X" + _EXIT.pack(pid, status))
        except OSError:
            return


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's; its workers follow their pipes
    try:
        serve(socket.socket(fileno=int(sys.argv[1])))
    except (OSError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
