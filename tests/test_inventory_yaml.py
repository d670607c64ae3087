"""The inventory YAML reader: what it reads equals the structure the block YAML was written from
(a reference emitter below), and hostile input (deep nesting) is one clear line naming file:line."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hussh._inventory_yaml import MAX_DEPTH, YAMLError, load

WORDS = {"~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE"}
PLAIN = re.compile(r"[a-z][a-z0-9_.\[\]/-]*(?::[a-z0-9]+)*")


def scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if PLAIN.fullmatch(text) and text not in WORDS:
        return text
    return "'" + text.replace("'", "''") + "'"


def emit(value: dict | list, indent: int) -> list[str]:
    """Block YAML for ``value`` (a dict or a list) at ``indent`` spaces, as inventories are written."""
    pad = " " * indent
    lines = []
    items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
    for key, item in items:
        head = f"{pad}{scalar(key)}:" if isinstance(value, dict) else f"{pad}-"
        if isinstance(item, (dict, list)) and item:
            lines.append(head)
            lines.extend(emit(item, indent + 2))
        elif isinstance(item, (dict, list)):
            lines.append(f"{head} {'{}' if isinstance(item, dict) else '[]'}")
        else:
            lines.append(f"{head} {scalar(item)}")
    return lines


keys = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True),
                 st.from_regex(r"web\[0[0-9]:[1-9]0\]", fullmatch=True),
                 st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
                         max_size=6).filter(lambda t: t.strip() == t))
leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), keys,
                   st.sampled_from(["10.0.0.1", "::1", "a b", "it's", "#x", "- x", "x: y", "@a", "1.5.2"]))
documents = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(keys, inner, max_size=4)), max_leaves=25)


@settings(max_examples=400)
@given(document=st.dictionaries(keys, documents, min_size=1, max_size=5))
def test_reads_what_was_written(document):
    text = "\n".join(["---", "# an inventory", *emit(document, 0)]) + "\n"
    assert load(text, "inv.yml") == document


@pytest.mark.parametrize("kind", ["mapping", "list"])
def test_nesting_is_bounded_with_a_clear_error(kind):
    def nested(levels: int) -> str:
        if kind == "mapping":
            return "".join(f"{' ' * i}k{i}:\n" for i in range(levels)) + f"{' ' * levels}leaf: 1\n"
        return "".join(f"{' ' * i}-\n" for i in range(levels)) + f"{' ' * levels}- leaf\n"
    assert load(nested(MAX_DEPTH - 2), "ok.yml") is not None
    deep = nested(50 * MAX_DEPTH)  # far past Python's own recursion limit, were it not bounded
    with pytest.raises(YAMLError) as raised:
        load(deep, "deep.yml")
    assert re.fullmatch(rf"deep\.yml:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep", str(raised.value))


def test_a_huge_number_is_a_name():
    assert load(f"web:\n  hosts:\n    {'9' * 5000}:\n", "big.yml") == {"web": {"hosts": {"9" * 5000: None}}}
