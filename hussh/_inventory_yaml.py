"""The subset of YAML that inventories are written in, read in one linear pass with line numbers.

Ansible's YAML inventories and ClusterShell's ``groups.d`` files use block mappings and sequences
of plain or quoted scalars, with ``{}``/``[...]`` flow collections on one line. That much is read
here (hussh has no YAML dependency); anchors, aliases, tags, multi-line scalars and nesting deeper
than ``MAX_DEPTH`` are refused naming ``file:line``. Every mapping is a ``Mapping`` that remembers
the line of each key.

One regular expression splits the whole text into lines, and the common ``key: plain value`` line
into its parts, in C; only the other lines (quotes, comments, lists, flow collections) are taken
apart in Python.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DEPTH", "Mapping", "YAMLError", "load", "scalar", "strip_comment"]

MAX_DEPTH = 100
"""Most levels of nested blocks: hostile input gets a clear error instead of exhausting the stack."""

_SPECIAL = r"\s#'\"\[\]{},&*!|>?%@`"
_KEY_CHAR = r"[^\s:#'\"{},]"
_LINE = re.compile(
    rf"^( *)(?:([^{_SPECIAL}:-]{_KEY_CHAR}*(?::{_KEY_CHAR}+)*):(?: +([^{_SPECIAL}-](?:[^#\n]*[^#\s])?))?"
    r"|((?:[^\n]*\S)?))[^\S\n]*$", re.M)
"""Every line: (indent, key, value, '') for a ``key: plain value`` or ``key:`` line, else (indent, '', '', text).
Greedy character classes only, so that the regex engine takes each character once."""
_NUMBER = re.compile(r"[-+]?(?:([0-9]+)|[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?)")
"""An int (group 1 matched) or a float, as YAML 1.1 writes them in inventories."""
_NUMBER_START = frozenset("0123456789+-.")
_WORDS: dict[str, object] = {word: None for word in ("~", "null", "Null", "NULL")}
_WORDS.update({word: word[0] in "tT" for word in ("true", "True", "TRUE", "false", "False", "FALSE")})
_UNSUPPORTED = {"&": "anchors", "*": "aliases", "!": "tags", "|": "block scalars", ">": "block scalars",
                "?": "complex keys", "%": "directives", "@": "reserved '@'", "`": "reserved '`'"}

# What a significant line is (the third field of a token): its key and rest were found by _LINE
# (a plain key, and a plain value or none), by _split_key (either may need quotes undone), or it is
# a list item ("- ...") or a bare scalar.
_PLAIN, _ENTRY, _ITEM, _SCALAR = range(4)
_Token = tuple[int, int, int, str, "str | None"]  # (line number, indent, kind, key, rest or None)


class YAMLError(ValueError):
    """A line the reader cannot take; the message starts with ``file:line:``."""


class Mapping(dict[str, object]):
    """A YAML mapping that also knows where it and each of its keys were written."""

    __slots__ = ("line", "lines")
    line: int
    lines: dict[str, int]


def _mapping(line: int) -> Mapping:
    result = Mapping()
    result.line, result.lines = line, {}
    return result


class _Reader:
    """Indentation-driven recursive reader over the significant lines of one document."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.tokens: list[_Token] = []
        append = self.tokens.append
        for number, (indent, key, value, text_) in enumerate(_LINE.findall(text), 1):
            if key:
                append((number, len(indent), _PLAIN, key, value or None))
            elif text_:
                if text_[0] == "\t":
                    raise self.error(number, "tab in indentation")
                if "#" in text_:
                    text_ = _strip_comment(text_).rstrip()
                    if not text_:
                        continue
                if text_ in ("---", "...") and not indent:
                    continue
                append(_token(number, len(indent), text_))
        self.pos = 0

    def error(self, line: int, message: str) -> YAMLError:
        return YAMLError(f"{self.path}:{line}: {message}")

    def document(self) -> object:
        if not self.tokens:
            return None
        value = self.block(self.tokens[0][1], 0)
        if self.pos < len(self.tokens):
            raise self.error(self.tokens[self.pos][0], "unexpected indentation")
        return value

    def block(self, indent: int, depth: int) -> object:
        number, _, kind, _, rest = self.tokens[self.pos]
        if depth >= MAX_DEPTH:
            raise self.error(number, f"nested more than {MAX_DEPTH} levels deep")
        if kind == _ITEM:
            return self.sequence(indent, depth + 1)
        if kind == _SCALAR:
            self.pos += 1
            return self.scalar(rest or "", number)
        return self.mapping(indent, depth + 1)

    def mapping(self, indent: int, depth: int) -> Mapping:
        tokens, pos, end = self.tokens, self.pos, len(self.tokens)
        result = Mapping()  # (not _mapping: one call less for each of a hundred thousand hosts)
        result.line, result.lines = tokens[pos][0], {}
        lines = result.lines
        while pos < end:
            number, here, kind, key, rest = tokens[pos]
            if here != indent:
                if here < indent:
                    break
                raise self.error(number, "unexpected indentation")
            if kind == _PLAIN:
                if key in _WORDS or key[0] in _NUMBER_START:
                    key = _key(self.scalar(key, number))
            elif kind == _ENTRY:
                key = _key(self.scalar(key, number))
            else:
                raise self.error(number, f"want 'key: value' here, got {(rest or '')[:40]!r}")
            if key in lines:
                raise self.error(number, f"key {key!r} repeated (first on line {lines[key]})")
            lines[key] = number
            pos += 1
            if rest is None:  # the block under the key (nested() and block(), inlined for the common case)
                if pos < end and (tokens[pos][1] > indent or (tokens[pos][1] == indent and tokens[pos][2] == _ITEM)):
                    self.pos = pos
                    if tokens[pos][2] <= _ENTRY and depth < MAX_DEPTH:
                        result[key] = self.mapping(tokens[pos][1], depth + 1)
                    else:
                        result[key] = self.block(tokens[pos][1], depth)
                    pos = self.pos
                else:
                    result[key] = None
            elif kind == _PLAIN:
                result[key] = _number(rest) if rest[0] in _NUMBER_START else _WORDS.get(rest, rest)
            else:
                result[key] = self.scalar(rest, number)
        self.pos = pos
        return result

    def sequence(self, indent: int, depth: int) -> list[object]:
        items: list[object] = []
        tokens = self.tokens
        while self.pos < len(tokens):
            number, here, kind, _, text = tokens[self.pos]
            if here < indent:
                break
            if here > indent or kind != _ITEM or text is None:
                raise self.error(number, "unexpected indentation" if here > indent else "want '- item' here")
            rest = text[1:].lstrip()
            if not rest:
                self.pos += 1
                items.append(self.nested(indent, depth, in_sequence=True))
                continue
            inner = _token(number, here + len(text) - len(rest), rest)
            if inner[2] == _ENTRY:  # "- k: v" opens a mapping at the column of k
                tokens[self.pos] = inner
                if depth >= MAX_DEPTH:
                    raise self.error(number, f"nested more than {MAX_DEPTH} levels deep")
                items.append(self.mapping(inner[1], depth + 1))
            else:
                self.pos += 1
                items.append(self.scalar(rest, number))
        return items

    def nested(self, indent: int, depth: int, in_sequence: bool = False) -> object:
        """The block under a ``key:`` or ``-`` with nothing after it, or ``None`` when none follows.

        A mapping's value may be a sequence at the key's own indentation (``hosts:`` then ``- a``)."""
        if self.pos < len(self.tokens):
            _, here, kind, _, _ = self.tokens[self.pos]
            if here > indent or (not in_sequence and here == indent and kind == _ITEM):
                return self.block(here, depth)
        return None

    def scalar(self, text: str, number: int) -> object:
        if text[0] in _UNSUPPORTED:
            raise self.error(number, f"YAML {_UNSUPPORTED[text[0]]} are not supported in inventories")
        if text[0] == "[":
            return [self.scalar(item.strip(), number) for item in self._flow(text, "]", number) if item.strip()]
        if text[0] == "{":
            result = _mapping(number)
            for item in self._flow(text, "}", number):
                if item.strip():
                    split = _split_key(item.strip())
                    if split is None:
                        raise self.error(number, f"want 'key: value' in {text!r}")
                    key = _key(self.scalar(split[0], number))
                    result[key] = self.scalar(split[1], number) if split[1] else None
                    result.lines[key] = number
            return result
        if text[0] in "'\"":
            return _quoted(text, number, self)
        if text[0] in _NUMBER_START:
            return _number(text)
        return _WORDS.get(text, text)

    def _flow(self, text: str, close: str, number: int) -> list[str]:
        if not text.endswith(close) or any(ch in text[1:-1] for ch in "[]{}"):
            raise self.error(number, f"only one-line flow collections without nesting are supported: {text!r}")
        return _split_outside_quotes(text[1:-1], ",")


def _token(number: int, indent: int, text: str) -> _Token:
    """A significant line that ``_LINE`` did not take apart: a list item, an entry or a bare scalar."""
    if text == "-" or text.startswith("- "):
        return (number, indent, _ITEM, "", text)
    split = _split_key(text)
    if split is None:
        return (number, indent, _SCALAR, "", text)
    return (number, indent, _ENTRY, split[0], split[1] or None)


def _key(value: object) -> str:
    """A mapping key as a string, as Ansible sees it: ``null`` is empty, ``12`` is ``"12"``."""
    return "" if value is None else str(value)


def _number(text: str) -> object:
    number = _NUMBER.fullmatch(text)
    if number is None:
        return text
    if number.group(1) is None:
        return float(text)
    try:
        return int(text)
    except ValueError:  # more digits than Python converts: a name, not a number anyone means
        return text


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
    if "\\" not in body:
        return body
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


def scalar(text: str, path: str, line: int) -> object:
    """One scalar or one-line flow collection as a value (``path`` and ``line`` name it in errors)."""
    return _Reader("", path).scalar(text, line)


def strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment (one at the start or after a space, outside quotes)."""
    return _strip_comment(line)


def load(text: str, path: str) -> object:
    """The document in ``text`` (``path`` names it in errors): mappings, lists and scalars."""
    return _Reader(text, path).document()
