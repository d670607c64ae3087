"""``Connection``: upstream hussh's blocking single-host API, a thin shell over ``AsyncConnection``."""

from __future__ import annotations

import os
from types import TracebackType

from . import _loop, _scp
from ._config import SSHConfigArg
from ._options import (
    DEFAULT_PORT,
    DEFAULT_USERNAME,
    MAX_OUTPUT,
    NO_MILLISECONDS,
    NO_SECONDS,
    ConnectOptions,
    connect_options,
)
from ._remote_copy import remote_copy
from ._result import SSHResult
from ._shell import InteractiveShell
from ._spec import ConnectSpec, HostKeyChecking
from .aio import AsyncConnection, AsyncFileTailer

__all__ = ["Connection", "FileTailer", "InteractiveShell"]


class Connection:
    """A blocking SSH connection that connects and logs in when constructed.

    Unlike ``AsyncConnection`` (seconds), ``timeout`` here is in **milliseconds**, as in upstream
    hussh: it bounds connecting and every command; ``0`` leaves commands unbounded while connecting
    is still bounded by ``connect_timeout`` (seconds) or the 15 s default. ``ssh_config``,
    ``proxy_jump`` and the other keyword-only options are ``AsyncConnection``'s; ``options`` (a
    ``hussh.ConnectOptions``, in seconds) holds any of them, a keyword given beating its field.
    """

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        username: str = DEFAULT_USERNAME,
        password: str | None = None,
        private_key: str | os.PathLike[str] | None = None,
        proxy_jump: str | tuple[str, int] | AsyncConnection | Connection | None = None,
        proxy_command: str | None = None,
        timeout: int = NO_MILLISECONDS,
        *,
        options: ConnectOptions | None = None,
        key_path: str | os.PathLike[str] | None = None,
        connect_timeout: float = NO_SECONDS,
        known_hosts: str | os.PathLike[str] | None = None,
        host_key_checking: HostKeyChecking | None = None,
        max_output: int = MAX_OUTPUT,
        forward_agent: bool | None = None,
        ssh_config: SSHConfigArg = None,
    ) -> None:
        self._async = AsyncConnection(host, options=connect_options(
            options, port=port, username=username, password=password, private_key=private_key,
            proxy_jump=proxy_jump, proxy_command=proxy_command,
            timeout=None if timeout is NO_MILLISECONDS else timeout / 1000, key_path=key_path,
            connect_timeout=connect_timeout, known_hosts=known_hosts, host_key_checking=host_key_checking,
            max_output=max_output, forward_agent=forward_agent, ssh_config=ssh_config,
        ))
        _loop.run(self._async.connect())

    spec: ConnectSpec = property(lambda self: self._async.spec)  # type: ignore[assignment]
    host = property(lambda self: self.spec.host)
    port = property(lambda self: self.spec.port)
    username = property(lambda self: self.spec.username)
    password = property(lambda self: self.spec.password)
    private_key = property(lambda self: self.spec.private_key)
    proxy_command = property(lambda self: self.spec.proxy_command or None)
    timeout = property(lambda self: int(self.spec.timeout * 1000))

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncConnection", "Connection", 1)

    def execute(self, command: str, timeout: int | None = None, *, input: str | bytes | None = None,
                sudo: bool = False, sudo_password: str | None = None) -> SSHResult:
        """Run ``command``; ``timeout`` in milliseconds overrides the connection's. Its stdin gets
        ``input``, then end of file; ``sudo``/``sudo_password``: see ``AsyncConnection.execute``."""
        seconds = None if timeout is None else timeout / 1000
        return _loop.run(self._async.execute(command, seconds, input=input, sudo=sudo, sudo_password=sudo_password))

    def sftp_read(self, remote_path: str, local_path: str | os.PathLike[str] | None = None) -> str | None:
        return _loop.run(self._async.sftp_read(remote_path, local_path))

    def sftp_write(self, local_path: str | os.PathLike[str], remote_path: str | None = None) -> None:
        _loop.run(self._async.sftp_write(local_path, remote_path))

    def sftp_write_data(self, data: str | bytes, remote_path: str, *, mode: int | None = None) -> None:
        _loop.run(self._async.sftp_write_data(data, remote_path, mode=mode))

    def sftp_list(self, path: str) -> list[str]:
        return _loop.run(self._async.sftp_list(path))

    def tail(self, remote_file: str) -> FileTailer:
        return FileTailer(self, remote_file)

    def close(self) -> None:
        _loop.run(self._async.close())

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def shell(self, pty: bool | None = None) -> InteractiveShell:
        """A login shell (with a terminal if ``pty``); ``with conn.shell() as sh: sh.send(...)``, then ``sh.result``."""
        return InteractiveShell(_loop.run(self._async.shell(pty)))

    def scp_read(self, remote_path: str, local_path: str | os.PathLike[str] | None = None) -> str | None:
        """Return the remote file as text, or save it to ``local_path``."""
        return _loop.run(_scp.scp_read(self._async, remote_path, local_path))

    def scp_write(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        _loop.run(_scp.scp_write(self._async, local_path, remote_path))

    def scp_write_data(self, data: str | bytes, remote_path: str) -> None:
        _loop.run(_scp.scp_write_data(self._async, data, remote_path))

    def sftp_put_dir(self, local_path: str | os.PathLike[str], remote_path: str, follow_symlinks: bool = True,
                     preserve_permissions: bool = True, fail_fast: bool = False) -> tuple[list[str], list[str]]:
        """Upload a local directory tree as ``remote_path``: (transferred, failed) local file paths."""
        return _loop.run(self._async.sftp_put_dir(local_path, remote_path, follow_symlinks, preserve_permissions,
                                                  fail_fast))

    def sftp_get_dir(self, remote_path: str, local_path: str | os.PathLike[str], follow_symlinks: bool = True,
                     preserve_permissions: bool = True, fail_fast: bool = False) -> tuple[list[str], list[str]]:
        """Download a remote directory tree as ``local_path``: (transferred, failed) remote file paths."""
        return _loop.run(self._async.sftp_get_dir(remote_path, local_path, follow_symlinks, preserve_permissions,
                                                  fail_fast))

    def remote_copy(self, source_path: str, dest_conn: Connection, dest_path: str | None = None) -> None:
        """Stream ``source_path`` from this host to ``dest_path`` (default: the same path) on ``dest_conn``."""
        if not isinstance(dest_conn, Connection):
            raise TypeError(f"dest_conn must be a Connection, not {type(dest_conn).__name__}")
        _loop.run(remote_copy(self._async, source_path, dest_conn._async, dest_path))


class FileTailer:
    """Blocking twin of ``AsyncFileTailer``: ``read(from_pos=None)``, ``seek_end()``, ``last_pos``;
    after exit ``contents``."""

    def __init__(self, conn: Connection, remote_file: str, init_pos: int | None = None) -> None:
        self._tailer = AsyncFileTailer(conn._async, remote_file, init_pos)

    remote_file = property(lambda self: self._tailer.remote_file)
    init_pos = property(lambda self: self._tailer.init_pos)
    last_pos = property(lambda self: self._tailer.last_pos)
    contents = property(lambda self: self._tailer.contents)

    def __enter__(self) -> FileTailer:
        _loop.run(self._tailer.__aenter__())
        return self

    def read(self, from_pos: int | None = None) -> str:
        return _loop.run(self._tailer.read(from_pos))

    def seek_end(self) -> int:
        """Skip what the file holds now; returns the new ``last_pos``."""
        return _loop.run(self._tailer.seek_end())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _loop.run(self._tailer.__aexit__(exc_type, exc, tb))
