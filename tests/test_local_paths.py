"""Local paths given to MultiConnection mean what they mean in the caller, however workers started."""

from __future__ import annotations

import threading

import pytest

from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER


@pytest.mark.parametrize("busy_thread", [False, True], ids=["forked", "zygote"])
def test_relative_local_paths_follow_the_callers_directory(fleet, remote_dir, tmp_path, monkeypatch, busy_thread):
    """With a second thread alive, workers come from the zygote, whose working directory is not ours."""
    source = remote_dir / "conf"
    source.write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    if busy_thread:
        thread.start()
    try:
        with MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                              port=fleet.port) as mc:
            results = mc.sftp_read(str(source), "copies/{host}/conf")
    finally:
        stop.set()
    assert not results.failed
    for host in fleet.addresses:
        assert (tmp_path / "copies" / host / "conf").read_text() == "x = 1\n"
        assert results[host].stdout == str(tmp_path / "copies" / host / "conf")
