"""Host lists as operators write them for clush and pdsh: ``web[001-120].example.com,db[1-3,7]``.

``expand`` turns such patterns into host names, ``fold`` turns names back into a short pattern for
display, ``read_hosts_file`` reads one pattern a line, ``select`` applies include and exclude
patterns, and ``parse_target`` splits ``user@host:port`` (IPv6 in brackets) into its parts.
Our own small parser rather than ClusterShell's ``NodeSet``, which is LGPL and far heavier than
the few conventions needed here.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import NamedTuple

__all__ = ["Target", "expand", "fold", "parse_target", "read_hosts_file", "select"]

_MAX_NAMES = 1_000_000
"""Most names one ``expand`` call may produce: a typo like ``[1-10000000]`` fails fast instead of eating memory."""

_PLAIN = re.compile(r"[^\s\[\],]+")
"""A name with nothing to expand: most of them, taken without splitting."""
_SPACE = re.compile(r"\s")
_RANGE_PART = re.compile(r"([0-9]+)(?:-([0-9]+)(?:/([0-9]+))?)?")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_DIGIT_RUNS = re.compile(r"([0-9]+)")


class Target(NamedTuple):
    """One SSH destination; ``None`` user or port means "use the default"."""

    user: str | None
    host: str
    port: int | None


def expand(pattern: str) -> list[str]:
    """Host names of a comma-separated pattern with ``[1-3,7]`` ranges, in order, without repeats.

    Leading zeros set the width (``[001-120]``); ``[1-9/2]`` takes every second number, as clush
    does; a bracket holding ':' at the start of a host or right after '@' is an IPv6 address
    (``user@[fe80::1]:22``), kept as written.
    """
    if _PLAIN.fullmatch(pattern):
        return [pattern]
    names: list[str] = []
    for item in _split_top_level(pattern):
        item = item.strip()
        if not item:
            continue
        if _SPACE.search(item):
            raise ValueError(f"whitespace inside host pattern {item!r}")
        tokens = _BRACKET.split(item)  # literals at even indexes, bracket contents at odd ones
        choices: list[list[str]] = []
        count = 1
        for index, token in enumerate(tokens):
            literal = index % 2 == 0
            before = tokens[index - 1] if index else ""
            if not literal and ":" in token and (before.endswith("@") or (index == 1 and not before)):
                token, literal = f"[{token}]", True  # IPv6 address, not a range
            if literal:
                choices.append([token])
                continue
            spans = _parse_range(token, item)
            count *= sum((r.stop - r.start + r.step - 1) // r.step for r, _ in spans)  # len() overflows
            if count + len(names) > _MAX_NAMES:
                raise ValueError(f"{item!r} expands to more than {_MAX_NAMES:,} names")
            choices.append([str(n).zfill(width) for numbers, width in spans for n in numbers])
        names.extend(map("".join, itertools.product(*choices)))
    return list(dict.fromkeys(names))


def _split_top_level(pattern: str) -> list[str]:
    """Split on commas outside brackets; unbalanced or nested brackets are errors."""
    items: list[str] = []
    depth = start = 0
    for index, ch in enumerate(pattern):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in host pattern {pattern[start:]!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host pattern {pattern[start : index + 1]!r}")
        elif ch == "," and depth == 0:
            items.append(pattern[start:index])
            start = index + 1
    if depth:
        raise ValueError(f"unbalanced '[' in host pattern {pattern[start:]!r}")
    items.append(pattern[start:])
    return items


def _parse_range(text: str, item: str) -> list[tuple[range, int]]:
    """``"001-003,7,10-20/5"`` -> ``[(range(1, 4), 3), (range(7, 8), 1), (range(10, 21, 5), 2)]``:
    the numbers of each part (clush's ``/step`` included) and their zero-padded width."""
    spans = []
    for part in text.split(","):
        match = _RANGE_PART.fullmatch(part)
        if not match:
            what = "empty range" if not part else f"bad range {part!r} (want N, N-M or N-M/STEP, digits only)"
            raise ValueError(f"{what} in host pattern {item!r}")
        first, last, step = match.group(1), match.group(2) or match.group(1), int(match.group(3) or 1)
        if int(first) > int(last):
            raise ValueError(f"bad range {part!r} in host pattern {item!r}: start is greater than end")
        if step < 1:
            raise ValueError(f"bad range {part!r} in host pattern {item!r}: the step must be 1 or more")
        spans.append((range(int(first), int(last) + 1, step), len(first)))
    return spans


def fold(hosts: Iterable[str]) -> str:
    """A short pattern for ``hosts`` (``web[001-117,119]``), for display; ``expand`` gives the names back.

    Names fold on their last number when they share what surrounds it and its zero padding. A name
    left alone that way tries its number before (``web[01-10].dc1``); names without digits, or with
    brackets (IPv6 literals), are shown as they are. Groups come in natural order (web2 before web10).
    """
    shown: list[tuple[list[str | int], str]] = []
    pending = {name: _DIGIT_RUNS.split(name) for name in hosts}  # name -> [text, digits, text, ..., text]
    run = 0  # which number of each name to fold on, counting from the end
    while pending:
        run += 1
        groups: dict[tuple[str, str, int], dict[int, str]] = {}
        for name, parts in pending.items():
            index = len(parts) - 2 * run
            if index < 1 or "[" in name:
                shown.append((_natural_key(parts), name))
                continue
            digits = parts[index]
            width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
            key = ("".join(parts[:index]), "".join(parts[index + 1 :]), width)
            groups.setdefault(key, {})[int(digits)] = name
        _join_full_width_numbers(groups)
        alone = {}
        for (prefix, suffix, width), members in groups.items():
            if len(members) == 1:
                name = next(iter(members.values()))
                alone[name] = pending[name]  # nothing to fold with here: try the number before this one
                continue
            ordered = sorted(members)
            spans = ",".join(
                f"{a:0{width}d}" if a == b else f"{a:0{width}d}-{b:0{width}d}" for a, b in _runs(ordered)
            )
            shown.append((_natural_key(pending[members[ordered[0]]]), f"{prefix}[{spans}]{suffix}"))
        pending = alone
    return ",".join(text for _, text in sorted(shown))


def _join_full_width_numbers(groups: dict[tuple[str, str, int], dict[int, str]]) -> None:
    """Move unpadded numbers as long as a padded group's width into it: web001-web099 + web100 = web[001-100]."""
    for prefix, suffix, _ in [key for key in groups if key[2] == 0]:
        members = groups[prefix, suffix, 0]
        for number in list(members):
            padded = groups.get((prefix, suffix, len(str(number))))
            if padded is not None:
                padded[number] = members.pop(number)
        if not members:
            del groups[prefix, suffix, 0]


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct ints -> (first, last) of each run of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][1] == number - 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


def _natural_key(parts: list[str]) -> list[str | int]:
    """Sort key of a name split at its digit runs, putting web2 before web10: numbers compare as numbers."""
    key: list[str | int] = list(parts)
    key[1::2] = map(int, parts[1::2])
    return key


def read_hosts_file(path: str | os.PathLike[str]) -> list[str]:
    """Hosts of a file with one name or pattern a line; ``#`` starts a comment, blank lines are skipped.

    ``OSError`` from opening or reading passes through; a bad line raises ``ValueError`` naming ``path:line``.
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{os.fspath(path)}:{lineno}: not UTF-8 text") from None
    names: list[str] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        try:
            names.extend(expand(line.partition("#")[0]))
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}:{lineno}: {exc}") from None
    return list(dict.fromkeys(names))


def parse_target(text: str) -> Target:
    """Split ``[user@]host[:port]`` into a ``Target``; IPv6 hosts take a port only as ``[addr]:port``.

    The user is everything before the last '@', so user names holding '@' work.
    """
    user, at, rest = text.strip().rpartition("@")
    if at and not user:
        raise ValueError(f"empty user in target {text!r}")
    port_text = None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"bad target {text!r}: want [address] or [address]:port")
        port_text = after[1:] if after else None
    elif rest.count(":") > 1:
        host = rest
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad target {text!r}: not an IPv6 address; write [address]:port") from None
    else:
        host, colon, port_text = rest.partition(":")
        port_text = port_text if colon else None
    if not host:
        raise ValueError(f"empty host in target {text!r}")
    if "[" in host or "]" in host:
        raise ValueError(f"bad target {text!r}: brackets in host name (expand patterns first)")
    port = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) <= 65535:
            raise ValueError(f"bad port {port_text!r} in target {text!r}: want 1-65535")
        port = int(port_text)
    return Target(user or None, host, port)


def select(include: str | Iterable[str], exclude: str | Iterable[str] = ()) -> list[str]:
    """Hosts of the ``include`` patterns minus those matched by ``exclude``, in order, without repeats.

    Excludes expand like includes; ``*`` and ``?`` in them are shell wildcards (``web*``).
    """
    hosts = _expand_all(include)
    dropped = _expand_all(exclude)
    exact = {name for name in dropped if "*" not in name and "?" not in name}
    wildcards = [name.replace("[", "[[]") for name in dropped if name not in exact]  # '[' stays literal
    return [host for host in hosts if host not in exact and not any(fnmatchcase(host, w) for w in wildcards)]


def _expand_all(patterns: str | Iterable[str]) -> list[str]:
    """Expand each pattern; a lone string counts as one pattern, not as its characters."""
    if isinstance(patterns, str):
        patterns = [patterns]
    return list(dict.fromkeys(name for pattern in patterns for name in expand(pattern)))
