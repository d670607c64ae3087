"""The subset of YAML that inventories are written in, read in one linear pass with line numbers.

Ansible's YAML inventories and ClusterShell's ``groups.d`` files use block mappings and sequences
of plain or quoted scalars, with ``{}``/``[...]`` flow collections on one line. That much is read
here (hussh has no YAML dependency); anchors, aliases, tags and multi-line scalars are refused
naming ``file:line``. Every mapping is a ``Mapping`` that remembers the line of each key.
"""

from __future__ import annotations

import re

__all__ = ["Mapping", "YAMLError", "load"]

_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_NUMBER_START = frozenset("0123456789+-.")
_UNSUPPORTED = {"&": "anchors", "*": "aliases", "!": "tags", "|": "block scalars", ">": "block scalars",
                "?": "complex keys", "%": "directives", "@": "reserved '@'", "`": "reserved '`'"}


class YAMLError(ValueError):
    """A line the reader cannot take; the message starts with ``file:line:``."""


class Mapping(dict[str, object]):
    """A YAML mapping that also knows where it and each of its keys were written."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[str, int] = {}


class _Reader:
    """Indentation-driven recursive reader over the significant lines of one document."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.lines: list[tuple[int, int, str]] = []  # (line number, indent, text without comment)
        for number, raw in enumerate(text.split("\n"), 1):
            stripped = raw.lstrip(" ")
            if stripped[:1] == "\t":
                raise self.error(number, "tab in indentation")
            if "#" in stripped:
                stripped = _strip_comment(stripped)
            stripped = stripped.rstrip()
            if not stripped or (stripped in ("---", "...") and len(raw) == len(raw.lstrip())):
                continue
            self.lines.append((number, len(raw) - len(raw.lstrip(" ")), stripped))
        self.pos = 0

    def error(self, line: int, message: str) -> YAMLError:
        return YAMLError(f"{self.path}:{line}: {message}")

    def document(self) -> object:
        if not self.lines:
            return None
        value = self.block(self.lines[0][1])
        if self.pos < len(self.lines):
            raise self.error(self.lines[self.pos][0], "unexpected indentation")
        return value

    def block(self, indent: int) -> object:
        number, _, text = self.lines[self.pos]
        if text == "-" or text.startswith("- "):
            return self.sequence(indent)
        if _split_key(text) is None:
            self.pos += 1
            return self.scalar(text, number)
        return self.mapping(indent)

    def mapping(self, indent: int) -> Mapping:
        result = Mapping(self.lines[self.pos][0])
        while self.pos < len(self.lines):
            number, here, text = self.lines[self.pos]
            if here < indent:
                break
            if here > indent:
                raise self.error(number, "unexpected indentation")
            split = _split_key(text)
            if split is None or text.startswith("- "):
                raise self.error(number, f"want 'key: value' here, got {text[:40]!r}")
            key_text, rest = split
            key = self.scalar(key_text, number)
            key = "" if key is None else str(key)
            if key in result:
                raise self.error(number, f"key {key!r} repeated (first on line {result.lines[key]})")
            result.lines[key] = number
            self.pos += 1
            result[key] = self.scalar(rest, number) if rest else self.nested(indent, number)
        return result

    def sequence(self, indent: int) -> list[object]:
        items: list[object] = []
        while self.pos < len(self.lines):
            number, here, text = self.lines[self.pos]
            if here < indent:
                break
            if here > indent or not (text == "-" or text.startswith("- ")):
                raise self.error(number, "unexpected indentation" if here > indent else "want '- item' here")
            rest = text[1:].lstrip()
            if not rest:
                self.pos += 1
                items.append(self.nested(indent, number, in_sequence=True))
            elif _split_key(rest) is not None and rest[0] not in "[{":
                self.lines[self.pos] = (number, here + len(text) - len(rest), rest)  # "- k: v" opens a mapping
                items.append(self.mapping(here + len(text) - len(rest)))
            else:
                self.pos += 1
                items.append(self.scalar(rest, number))
        return items

    def nested(self, indent: int, number: int, in_sequence: bool = False) -> object:
        """The block under a ``key:`` or ``-`` with nothing after it, or ``None`` when none follows.

        A mapping's value may be a sequence at the key's own indentation (``hosts:`` then ``- a``)."""
        if self.pos < len(self.lines):
            _, here, text = self.lines[self.pos]
            if here > indent or (not in_sequence and here == indent and (text == "-" or text.startswith("- "))):
                return self.block(here)
        return None

    def scalar(self, text: str, number: int) -> object:
        if text[0] in _UNSUPPORTED:
            raise self.error(number, f"YAML {_UNSUPPORTED[text[0]]} are not supported in inventories")
        if text[0] == "[":
            return [self.scalar(item.strip(), number) for item in self._flow(text, "]", number) if item.strip()]
        if text[0] == "{":
            result = Mapping(number)
            for item in self._flow(text, "}", number):
                if item.strip():
                    split = _split_key(item.strip())
                    if split is None:
                        raise self.error(number, f"want 'key: value' in {text!r}")
                    key = str(self.scalar(split[0], number))
                    result[key] = self.scalar(split[1], number) if split[1] else None
                    result.lines[key] = number
            return result
        if text[0] in "'\"":
            return _quoted(text, number, self)
        if text in ("~", "null", "Null", "NULL"):
            return None
        if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
            return text[0] in "tT"
        if text[0] in _NUMBER_START:
            if _INT.fullmatch(text):
                return int(text)
            if _FLOAT.fullmatch(text):
                return float(text)
        return text

    def _flow(self, text: str, close: str, number: int) -> list[str]:
        if not text.endswith(close) or any(ch in text[1:-1] for ch in "[]{}"):
            raise self.error(number, f"only one-line flow collections without nesting are supported: {text!r}")
        return _split_outside_quotes(text[1:-1], ",")


def _strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment (one at the start or after a space, outside quotes)."""
    if "#" not in line:
        return line
    quote = ""
    for index, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"" and (index == 0 or line[index - 1] in " \t:[{,-"):
            quote = ch
        elif ch == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _split_key(text: str) -> tuple[str, str] | None:
    """``key: rest`` -> (key, rest); ``None`` when ``text`` is no mapping entry."""
    if text[0] in "'\"":
        end = text.find(text[0], 1)
        while end != -1 and text[0] == "'" and text[end + 1 : end + 2] == "'":
            end = text.find("'", end + 2)
        if end == -1 or not text[end + 1 :].startswith(":"):
            return None
        after = text[end + 2 :]
        return (text[: end + 1], after.strip()) if not after or after[0] == " " else None
    if text[0] in "[{":
        return None
    index = text.find(":")
    while index != -1:
        if index + 1 == len(text) or text[index + 1] == " ":
            return text[:index].rstrip(), text[index + 1 :].strip()
        index = text.find(":", index + 1)
    return None


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, start, quote = [], 0, ""
    for index, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _quoted(text: str, number: int, reader: _Reader) -> str:
    quote = text[0]
    if len(text) < 2 or text[-1] != quote:
        raise reader.error(number, f"unterminated or multi-line quoted string {text[:40]!r}")
    body = text[1:-1]
    if quote == "'":
        return body.replace("''", "'")
    escapes = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "/": "/", "0": "\0"}
    out, chars = [], iter(body)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt not in escapes:
                raise reader.error(number, f"unsupported escape '\\{nxt}' in {text[:40]!r}")
            out.append(escapes[nxt])
        else:
            out.append(ch)
    return "".join(out)


def load(text: str, path: str) -> object:
    """The document in ``text`` (``path`` names it in errors): mappings, lists and scalars."""
    return _Reader(text, path).document()
