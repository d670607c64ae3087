"""Memory under hostile output: the caller's and each worker's peak stay within 3x the documented bound.

Hosts stream twice ``max_output`` of random bytes, 0xff (each byte becomes U+FFFD) or valid
multi-byte text, each host's output different (it starts with the host's name), so the caller's
sharing of identical outputs cannot hide the cost. Each case runs in a fresh caller process with
fresh workers (``scale.bench_hostile_output``'s probe), whose peak resident memory (VmHWM) is
compared with the same after connecting, before any output: the fixed base.
"""

from __future__ import annotations

from typing import Any

import pytest

from hussh.aio import utf8_complete_length
from scale.bench_hostile_output import bounds, growth, run_case

MAX_OUTPUT = 16 << 20  # small enough to run in seconds, large enough to dwarf allocator noise


@pytest.mark.parametrize("hosts", [1, 4])
@pytest.mark.parametrize("kind", ["random", "ff", "utf8"])
def test_peak_memory_stays_within_three_times_the_documented_bound(fleet, kind, hosts):
    row: dict[str, Any] = run_case(fleet.addresses[:hosts], fleet.port, kind, MAX_OUTPUT)
    row["caller_bound"], row["worker_bound"] = bounds(kind, hosts, MAX_OUTPUT)
    assert row["errors"] == ["OutputLimitExceeded"]  # every host streamed past the bound and was stopped
    assert min(row["kept_chars"]) >= MAX_OUTPUT // (1 if kind == "ff" else 4)
    assert len(row["peak"]["workers"]) == 1
    assert growth(row, "workers") <= 3, row
    assert growth(row, "caller") <= 3, row


def test_a_tail_holds_back_only_bytes_that_can_still_become_a_character():
    """A split character waits for the next read; a byte that never starts one (0xC0, 0xC1, 0xF5-0xFF)
    does not, or a log ending in it would be re-read, never delivered."""
    assert utf8_complete_length("a€".encode()[:-1]) == 1
    assert utf8_complete_length(b"ab\xf0\x9f\x98") == 2
    assert [utf8_complete_length(b"ab" + bytes([byte])) for byte in (0xC0, 0xC1, 0xF5, 0xFF)] == [3] * 4
