"""hussh.hostlist: clush/pdsh host patterns, folding for display, hosts files, targets, include/exclude.

Pure unit tests: no sshd, no network.
"""

from __future__ import annotations

import random

import pytest

from hussh.hostlist import Target, expand, fold, parse_target, read_hosts_file, select

# --- expand ---------------------------------------------------------------------------------------


def test_expand_keeps_zero_padding():
    hosts = expand("web[001-120].example.com")
    assert len(hosts) == 120
    assert hosts[:2] == ["web001.example.com", "web002.example.com"]
    assert "web099.example.com" in hosts and "web100.example.com" in hosts
    assert hosts[-1] == "web120.example.com"


def test_expand_unpadded_range_grows_in_width():
    assert expand("n[8-11]") == ["n8", "n9", "n10", "n11"]
    assert expand("n[08-11]") == ["n08", "n09", "n10", "n11"]


def test_expand_list_and_single_numbers_in_brackets():
    assert expand("db[1-3,7]") == ["db1", "db2", "db3", "db7"]
    assert expand("db[7,01-02]") == ["db7", "db01", "db02"]


def test_expand_several_brackets_leftmost_varies_slowest():
    assert expand("r[1-2]n[01-02]") == ["r1n01", "r1n02", "r2n01", "r2n02"]
    assert expand("x[1-2]-[3-4].y") == ["x1-3.y", "x1-4.y", "x2-3.y", "x2-4.y"]


def test_expand_plain_list_and_commas_inside_brackets():
    assert expand("a,b,c") == ["a", "b", "c"]
    assert expand("a,db[1,2],b") == ["a", "db1", "db2", "b"]


def test_expand_keeps_order_and_first_occurrence():
    assert expand("b,a,b,a[1-2],a1,c") == ["b", "a", "a1", "a2", "c"]


def test_expand_ignores_surrounding_whitespace_and_empty_items():
    assert expand(" a , b,,c, ") == ["a", "b", "c"]
    assert expand("") == []


def test_expand_leaves_other_characters_alone():
    assert expand("user@web[1-2].example.com:2222") == ["user@web1.example.com:2222", "user@web2.example.com:2222"]
    assert expand("10.0.0.[1-3]") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


@pytest.mark.parametrize(
    "pattern",
    ["[::1]:2222", "user@[fe80::1]:22", "[fe80::1%eth0]", "a@b@[2001:db8::7]:22", "fe80::1"],
)
def test_expand_ipv6_brackets_are_addresses_not_ranges(pattern):
    assert expand(pattern) == [pattern]


def test_expand_ipv6_next_to_ranges():
    assert expand("[::1]:2222,[::2]:2222") == ["[::1]:2222", "[::2]:2222"]
    assert expand("[::1]:[2222-2223]") == ["[::1]:2222", "[::1]:2223"]
    assert expand("fe80::[1-2]") == ["fe80::1", "fe80::2"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("web[1-3", r"unbalanced '\[' in host pattern 'web\[1-3'"),
        ("ok,web1-3]", r"unbalanced '\]' in host pattern 'web1-3\]'"),
        ("a[[1-2]]", r"nested '\['"),
        ("db[5-1]", r"bad range '5-1' in host pattern 'db\[5-1\]': start is greater than end"),
        ("x[a-b]", r"bad range 'a-b' .* in host pattern 'x\[a-b\]'"),
        ("x[1-b]", r"bad range '1-b'"),
        ("x[1-2-3]", r"bad range '1-2-3'"),
        ("x[-1]", r"bad range '-1'"),
        ("x[]", r"empty range in host pattern 'x\[\]'"),
        ("x[1,]", r"empty range in host pattern 'x\[1,\]'"),
        ("x[1,,2]", r"empty range"),
        ("x[1-]", r"bad range '1-'"),
        ("host[1:3]", r"bad range '1:3'"),  # ':' makes an IPv6 address only where a host starts
        ("a[1-2][::1]", r"bad range '::1'"),
        ("a b", r"whitespace inside host pattern 'a b'"),
        ("y[1-1000001]", r"'y\[1-1000001\]' expands to more than 1,000,000 names"),
        ("w[0-99][0-99][0-100]", r"'w\[0-99\]\[0-99\]\[0-100\]' expands to more than 1,000,000 names"),
        ("a[1-600000],b[1-400001]", r"'b\[1-400001\]' expands to more than 1,000,000 names"),
    ],
)
def test_expand_rejects_malformed_patterns_naming_the_bad_part(pattern, message):
    with pytest.raises(ValueError, match=message) as info:
        expand(pattern)
    assert "\n" not in str(info.value)


def test_expand_allows_exactly_one_million():
    assert len(expand("y[1-1000000]")) == 1_000_000


def test_expand_refuses_huge_ranges_without_building_them():
    with pytest.raises(ValueError, match="more than 1,000,000"):
        expand("z[0-99999999999999999999]")


# --- fold -----------------------------------------------------------------------------------------


def test_fold_the_documented_example():
    names = [f"web{n:03d}" for n in range(1, 118)] + ["web119"]
    assert fold(names) == "web[001-117,119]"


def test_fold_keeps_padding_and_absorbs_full_width_numbers():
    assert fold(expand("web[001-120].example.com")) == "web[001-120].example.com"
    assert fold(["n8", "n9", "n10", "n11"]) == "n[8-11]"
    assert fold(["n08", "n09", "n10", "n11"]) == "n[08-11]"


def test_fold_separates_prefix_suffix_and_padding():
    names = ["web1.a", "web2.a", "web1.b", "db1", "db2", "web01.a", "web02.a"]
    assert fold(names) == "db[1-2],web[01-02].a,web[1-2].a,web1.b"


def test_fold_orders_groups_naturally():
    assert fold(["web10", "web9", "db2", "app", "web11", "db10"]) == "app,db[2,10],web[9-11]"
    assert fold(["n10.b", "n9.a", "n10.a", "n2.c"]) == "n2.c,n[9-10].a,n10.b"


def test_fold_single_names_and_names_without_digits_stay_as_they_are():
    assert fold(["web7"]) == "web7"
    assert fold(["alpha", "beta", "alpha"]) == "alpha,beta"
    assert fold([]) == ""


def test_fold_uses_the_last_number():
    assert fold(["r1n01", "r1n02", "r2n01", "r2n02"]) == "r1n[01-02],r2n[01-02]"
    assert fold(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1"]) == "10.0.0.[1-3],10.0.1.1"


def test_fold_names_left_alone_try_an_earlier_number():
    assert fold(["web01.dc1", "web02.dc1", "web03.dc2"]) == "web[01-02].dc1,web03.dc2"
    assert fold(["r1n01", "r1n02", "r2n01", "r3n01"]) == "r1n[01-02],r[2-3]n01"
    assert fold(["a1b1c1", "a2b1c1"]) == "a[1-2]b1c1"
    # the last number wins when both could fold
    assert fold(expand("web[01-02].dc[1-2]")) == "web01.dc[1-2],web02.dc[1-2]"


def test_fold_removes_duplicates():
    assert fold(["a1", "a2", "a1", "a2", "a3"]) == "a[1-3]"


def test_fold_keeps_ipv6_literals_whole():
    names = ["[::1]:2222", "[::1]:2223", "user@[fe80::1]:22"]
    assert fold(names) == "[::1]:2222,[::1]:2223,user@[fe80::1]:22"
    assert set(expand(fold(names))) == set(names)


@pytest.mark.parametrize(
    "pattern",
    [
        "web[001-117,119]",
        "web[001-120].example.com",
        "db[1-3,7]",
        "a,b,c",
        "db[1-3,7],mail,web[01-10].dc1",
        "n[0-9999]",
        "10.0.0.[1-254]",
        "host7",
        "n[8-11]",
        "x[098-102]",
        "web[001-120].dc1.example.com",
        "r[1-3]n01",
    ],
)
def test_fold_expand_round_trip(pattern):
    assert fold(expand(pattern)) == pattern


def test_fold_ten_thousand_names():
    numbers = [n for n in range(1, 10_001) if n % 1000 != 0]
    names = [f"node{n:05d}.rack.example.com" for n in numbers]
    random.Random(7).shuffle(names)
    spans = ",".join(f"{k * 1000 + 1:05d}-{k * 1000 + 999:05d}" for k in range(10))
    assert fold(names) == f"node[{spans}].rack.example.com"
    assert set(expand(fold(names))) == set(names)


def test_randomized_round_trip():
    rng = random.Random(20261201)
    prefixes = ["web", "db-", "r1n", "10.0.0.", "x", ""]
    suffixes = ["", ".example.com", "-mgmt", ".dc2"]
    for _ in range(300):
        names = []
        for _ in range(rng.randrange(1, 40)):
            width = rng.choice([0, 0, 2, 3, 5])
            number = rng.randrange(1, 1500)
            if width and len(str(number)) > width:
                number %= 10 ** (width - 1)  # keep a leading zero: these names really are padded
            digits = str(number).zfill(width)
            names.append(f"{rng.choice(prefixes)}{digits}{rng.choice(suffixes)}")
        names.append(rng.choice(["bastion", "gateway", "[::1]:22"]))  # no digits, IPv6 literal
        folded = fold(names)
        again = expand(folded)
        assert sorted(again) == sorted(set(names)), folded
        assert fold(again) == folded


def test_randomized_patterns_round_trip():
    rng = random.Random(12345)
    for _ in range(300):
        parts = []
        for _ in range(rng.randrange(1, 4)):
            ranges = []
            for _ in range(rng.randrange(1, 4)):
                start = rng.randrange(0, 300)
                width = rng.choice([1, 3, 4])
                ranges.append(f"{start:0{width}d}-{start + rng.randrange(0, 50):0{width}d}")
            parts.append(f"{rng.choice(['n', 'web', 'db'])}[{','.join(ranges)}]{rng.choice(['', '.a'])}")
        hosts = expand(",".join(parts))
        assert len(hosts) == len(set(hosts))
        assert sorted(expand(fold(hosts))) == sorted(hosts)


# --- read_hosts_file ------------------------------------------------------------------------------


def test_read_hosts_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(
        "# fleet\n"
        "\n"
        "web[01-03]   # frontends\n"
        "   db1\n"
        "user@[fe80::1]:22\n"
        "web02\n"
        "a,b  \n"
        "   # indented comment\n"
        "last",
        encoding="utf-8",
    )
    assert read_hosts_file(path) == ["web01", "web02", "web03", "db1", "user@[fe80::1]:22", "a", "b", "last"]
    assert read_hosts_file(str(path)) == read_hosts_file(path)


def test_read_hosts_file_crlf_and_byte_order_mark(tmp_path):
    path = tmp_path / "hosts"
    path.write_bytes(b"\xef\xbb\xbfweb1\r\nweb2 # x\r\n")
    assert read_hosts_file(path) == ["web1", "web2"]


def test_read_hosts_file_names_file_and_line_of_a_bad_line(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("web1\n# ok\nweb[5-1]\nweb2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"hosts:3: bad range '5-1'") as info:
        read_hosts_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_hosts_file_two_hosts_on_one_line_is_an_error(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("web1 web2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"hosts:1: whitespace"):
        read_hosts_file(path)


def test_read_hosts_file_not_utf8(tmp_path):
    path = tmp_path / "hosts"
    path.write_bytes(b"web1\nweb2\nw\xffeb3\n")
    with pytest.raises(ValueError, match=r"hosts:3: not UTF-8 text"):
        read_hosts_file(path)


def test_read_hosts_file_os_errors_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_hosts_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        read_hosts_file(tmp_path)


# --- parse_target ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web1", Target(None, "web1", None)),
        ("root@web1", Target("root", "web1", None)),
        ("web1:2222", Target(None, "web1", 2222)),
        ("root@web1.example.com:22", Target("root", "web1.example.com", 22)),
        ("10.0.0.1:65535", Target(None, "10.0.0.1", 65535)),
        ("[::1]:2222", Target(None, "::1", 2222)),
        ("[::1]", Target(None, "::1", None)),
        ("deploy@[fe80::1]:22", Target("deploy", "fe80::1", 22)),
        ("fe80::1", Target(None, "fe80::1", None)),
        ("ops@fe80::1%eth0", Target("ops", "fe80::1%eth0", None)),
        ("me@corp.example@bastion:1", Target("me@corp.example", "bastion", 1)),
        ("  web1  ", Target(None, "web1", None)),
    ],
)
def test_parse_target(text, expected):
    assert parse_target(text) == expected


def test_target_unpacks():
    user, host, port = parse_target("a@b:3")
    assert (user, host, port) == ("a", "b", 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web1:0", r"bad port '0'"),
        ("web1:65536", r"bad port '65536'"),
        ("web1:ssh", r"bad port 'ssh'"),
        ("web1:", r"bad port ''"),
        ("web1:+22", r"bad port '\+22'"),
        ("web1:٢٢", r"bad port"),  # non-ASCII digits
        ("[::1]:x", r"bad port 'x'"),
        ("", r"empty host"),
        ("root@", r"empty host"),
        (":22", r"empty host"),
        ("[]:22", r"empty host"),
        ("@web1", r"empty user"),
        ("[::1", r"bad target '\[::1'"),
        ("[::1]22", r"bad target"),
        ("host:1:2", r"not an IPv6 address"),
        ("web[1-3]", r"brackets in host name"),
    ],
)
def test_parse_target_rejects(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_target(text)
    assert "\n" not in str(info.value)


# --- select ---------------------------------------------------------------------------------------


def test_select_include_and_exclude_patterns():
    assert select(["web[1-5]"], ["web[2-3]"]) == ["web1", "web4", "web5"]


def test_select_keeps_order_and_removes_duplicates():
    assert select(["c,a", "b,a[1-2]", "c"], ["b"]) == ["c", "a", "a1", "a2"]


def test_select_wildcard_excludes():
    hosts = select(["web[1-3],db[1-2],webmail"], ["web*", "db?"])
    assert hosts == []
    assert select(["web[1-12]"], ["web1?"]) == ["web1", "web2", "web3", "web4", "web5", "web6", "web7", "web8", "web9"]


def test_select_brackets_in_excludes_are_ranges_not_character_classes():
    assert select(["web[1-12]"], ["web[1-10]"]) == ["web11", "web12"]
    assert select(["[::1]:22,[::1]:23,[::2]:22"], ["[::1]*"]) == ["[::2]:22"]


def test_select_accepts_a_single_string():
    assert select("web[1-3]", "web2") == ["web1", "web3"]


def test_select_without_exclude():
    assert select(["a[1-2]", "b"]) == ["a1", "a2", "b"]


def test_select_bad_pattern_raises():
    with pytest.raises(ValueError, match="unbalanced"):
        select(["web[1-2"])
    with pytest.raises(ValueError, match="bad range"):
        select(["web1"], ["web[2-1]"])
