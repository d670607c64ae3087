"""hussh.inventory: each format, the two pattern languages, errors naming file:line, property tests
against a reference expansion, and MultiConnection.from_inventory / ``hussh run -g`` on the real fleet."""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clirun import hussh
from hussh.inventory import HostVars, Inventory, InventoryError, load
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER


def write(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    path.chmod(mode)
    return path


# ----------------------------------------------------------------------------- Ansible

INI = """
    lone ansible_host=10.0.0.9
    [web]
    web[01:03] ansible_user=deploy
    web9:2200 ansible_host="10.0.0.99"   # an inline comment
    [db]
    db-[a:c]
    [prod:children]
    web
    [prod:vars]
    ansible_user=produser
    ansible_port=2222
"""


def test_ansible_ini_ranges_children_and_vars(tmp_path):
    inventory = load(write(tmp_path, "hosts", INI))
    assert inventory.hosts == ["lone", "web01", "web02", "web03", "web9", "db-a", "db-b", "db-c"]
    assert inventory.hosts_of("prod") == ["web01", "web02", "web03", "web9"]
    assert inventory.vars("web01") == HostVars(None, 2222, "deploy")  # its own user beats the group's
    assert inventory.vars("web9") == HostVars("10.0.0.99", 2200, "produser")  # host:port beats the group's port
    assert inventory.vars("lone") == HostVars("10.0.0.9", None, None)
    assert inventory.vars("db-a") == HostVars()


def test_ansible_yaml_with_nested_children_and_group_vars(tmp_path):
    inventory = load(write(tmp_path, "hosts.yml", """
        all:
          hosts:
            lone:
              ansible_host: 10.0.0.9
          children:
            web:                    # a comment
              hosts:
                web[01:02]:
                "web3": {ansible_port: 2201}
              vars:
                ansible_user: deploy
              children:
                canary:
                  hosts:
                    web-c[a:b]:
                    web-cc:
                  vars:
                    ansible_user: canary      # a child group's beats its parent's
            db:
              hosts:
                db1:
                  ansible_user: 'o''brien'
    """))
    assert inventory.hosts_of("web") == ["web01", "web02", "web3", "web-ca", "web-cb", "web-cc"]
    assert inventory.vars("web3") == HostVars(None, 2201, "deploy")
    assert inventory.vars("web-ca") == HostVars(None, None, "canary")
    assert inventory.vars("web01") == HostVars(None, None, "deploy")  # from its group
    assert inventory.vars("db1").user == "o'brien"
    assert inventory.select("all") == ["lone", "web01", "web02", "web3", "web-ca", "web-cb", "web-cc", "db1"]


def test_dynamic_inventory_script_with_meta_hostvars(tmp_path):
    listing = {"web": {"hosts": ["w1", "w2"], "vars": {"ansible_user": "u"}, "children": ["canary"]},
               "canary": ["w3"], "_meta": {"hostvars": {"w1": {"ansible_host": "1.2.3.4", "ansible_port": "2022"}}}}
    script = write(tmp_path, "inventory.py", f"""
        #!/bin/sh
        [ "$1" = --list ] || exit 9
        echo '{json.dumps(listing)}'
    """, mode=0o755)
    inventory = load(script)
    assert inventory.hosts_of("web") == ["w1", "w2", "w3"]
    assert inventory.vars("w1") == HostVars("1.2.3.4", 2022, "u")
    assert inventory.vars("w3") == HostVars(None, None, "u")


def test_a_failing_script_is_one_line_naming_it(tmp_path):
    script = write(tmp_path, "broken", "#!/bin/sh\necho 'no database' >&2\nexit 3\n", mode=0o755)
    with pytest.raises(InventoryError, match=rf"^{re.escape(str(script))} --list: exit status 3: no database$"):
        load(script)


# ----------------------------------------------------------------------------- genders and ClusterShell

def test_genders_attributes_and_values_are_groups(tmp_path):
    inventory = load(write(tmp_path, "genders", """
        # nodes   attributes
        n[1-3]    compute,rack=1
        n4        compute,rack=2,gpu
        mgmt1     mgmt
    """))
    assert inventory.nodes("@compute") == ["n1", "n2", "n3", "n4"]
    assert inventory.nodes("@rack=1") == ["n1", "n2", "n3"]
    assert inventory.select("compute:!gpu") == ["n1", "n2", "n3"]


def test_clush_groups_d_yaml_with_group_references(tmp_path):
    inventory = load(write(tmp_path, "cluster.yaml", """
        roles:
          adm: 'mgmt[1-2]'
          compute: 'node[0001-0004]'
          gpu: node[0001-0002]
          cpu: '@compute!@gpu'
        racks:
          r1: 'node[0001-0002],mgmt1'
    """))
    assert inventory.nodes("@cpu") == ["node0003", "node0004"]
    assert inventory.nodes("@roles:adm") == ["mgmt1", "mgmt2"]
    assert inventory.nodes("@racks:r1") == ["node0001", "node0002", "mgmt1"]
    with pytest.raises(InventoryError, match="no group 'r1'"):  # only the first source answers to bare names
        inventory.nodes("@r1")


def test_clush_groups_conf_map_and_list_commands_run_when_asked(tmp_path):
    groups = write(tmp_path, "groups", "web: w[1-3]\ndb: d1 d2\n")
    calls = tmp_path / "calls"
    conf = write(tmp_path, "groups.conf", f"""
        [Main]
        default: local
        autodir: $CFGDIR/groups.d

        [local]
        map: echo $GROUP >> {calls}; sed -n 's/^$GROUP:\\(.*\\)/\\1/p' {groups}
        list: sed -n 's/^\\([a-z]*\\):.*/\\1/p' {groups}
    """)
    (tmp_path / "groups.d").mkdir()
    write(tmp_path / "groups.d", "extra.yaml", "extra:\n  edge: 'e[1-2]'\n")
    inventory = load(conf)
    assert not calls.exists()  # nothing runs until a group is asked for
    assert inventory.nodes("@web") == ["w1", "w2", "w3"]
    assert inventory.nodes("@local:db") == ["d1", "d2"]
    assert inventory.nodes("@web") == ["w1", "w2", "w3"]
    assert calls.read_text().split() == ["web", "db"]  # each group's command ran once
    assert inventory.nodes("@extra:edge") == ["e1", "e2"]
    assert set(inventory.groups()) >= {"web", "db", "local:web", "local:db", "extra:edge"}
    with pytest.raises(InventoryError, match="no group 'nope'"):
        inventory.nodes("@nope")


def test_a_directory_is_every_file_in_it(tmp_path):
    write(tmp_path, "a.ini", "[web]\nweb1\n")
    write(tmp_path, "b.yml", "db:\n  hosts:\n    db1:\n")
    write(tmp_path, "old.retry", "garbage [[[\n")
    assert load(tmp_path).select("web,db") == ["web1", "db1"]


# ----------------------------------------------------------------------------- patterns

@pytest.fixture
def sample(tmp_path) -> Inventory:
    return load(write(tmp_path, "hosts", """
        [web]
        web[1:4]
        [db]
        db[1:2]
        [prod]
        web[1:2]
        db1
    """))


@pytest.mark.parametrize(("pattern", "expected"), [
    ("web", ["web1", "web2", "web3", "web4"]),
    ("web:&prod", ["web1", "web2"]),
    ("web:&prod:!web2", ["web1"]),
    ("!web2:web:&prod", ["web1"]),  # the order of terms does not matter: unions, then &, then !
    ("web,db", ["web1", "web2", "web3", "web4", "db1", "db2"]),
    ("all:!web*", ["db1", "db2"]),
    ("~web[13]", ["web1", "web3"]),
    ("db2:web4", ["db2", "web4"]),
    ("!prod", ["web3", "web4", "db2"]),
])
def test_ansible_patterns(sample, pattern, expected):
    assert sample.select(pattern) == expected


@pytest.mark.parametrize(("nodes", "expected"), [
    ("@web,@db", ["web1", "web2", "web3", "web4", "db1", "db2"]),
    ("@web!web3", ["web1", "web2", "web4"]),
    ("@web&@prod", ["web1", "web2"]),
    ("@web,-web1,-web2", ["web3", "web4"]),  # pdsh's -host
    ("other[1-2],@db", ["other1", "other2", "db1", "db2"]),  # hosts outside the inventory are fine
    ("@*!@web", ["db1", "db2"]),
])
def test_node_sets(sample, nodes, expected):
    assert sample.nodes(nodes) == expected


def test_node_set_from_a_file(sample, tmp_path):
    listed = write(tmp_path, "list", "web4\n# a comment\nextra[1-2]\n")
    assert sample.nodes(f"^{listed},-extra1") == ["web4", "extra2"]


@pytest.mark.parametrize(("pattern", "message"), [
    ("nope", "no group or host 'nope'"),
    ("web:&nope", "no group or host 'nope'"),
    ("~(", "bad regular expression"),
    ("web:!", "empty term"),
])
def test_a_pattern_naming_nothing_is_an_error(sample, pattern, message):
    with pytest.raises(InventoryError, match=re.escape(message)):
        sample.select(pattern)


# ----------------------------------------------------------------------------- errors name file:line

@pytest.mark.parametrize(("name", "text", "line", "message"), [
    ("hosts", "[web\nweb1\n", 1, "bad section header"),
    ("hosts", "[web]\nweb1 ansible_port=http\n", 2, "bad ansible_port 'http'"),
    ("hosts", "[web]\nweb1 novalue\n", 2, "want key=value"),
    ("hosts", "[web]\nweb[3:1]\n", 2, "start is greater than end"),
    ("hosts", "[web:children]\na b\n", 2, "want one child group name"),
    ("hosts.yml", "web:\n  hosts:\n    w1:\n  bogus: 1\n", 4, "unexpected key 'bogus'"),
    ("hosts.yml", "web:\n  hosts:\n    w1:\n    w1:\n", 4, "key 'w1' repeated (first on line 3)"),
    ("hosts.yml", "web:\n  hosts: &anchor\n", 2, "anchors are not supported"),
    ("hosts.yml", "web:\n  hosts:\n     w1:\n    w2:\n", 4, "unexpected indentation"),
    ("hosts.json", '{"web": ["a",\n "b",]}', 2, "not JSON"),
    ("genders", "n1 a\nn2 b c\n", 2, "want 'nodes attr,attr=value,...'"),
    ("groups.yaml", "roles:\n  a: '@b'\n  b: '@a'\n", 2, "refers to an unknown group or to itself"),
    ("groups.conf", "[Main]\ndefault: x\ngarbage line\n", 3, "cannot parse 'garbage line'"),
    ("hosts", "[web]\nweb1\n\xff\n", 3, "not UTF-8 text"),
])
def test_malformed_files_are_one_line_naming_file_and_line(tmp_path, name, text, line, message):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", errors="surrogateescape") if "\xff" not in text
                     else text.encode("latin-1"))
    with pytest.raises(InventoryError) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}:{line}: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


# ----------------------------------------------------------------------------- property tests

def reference_range(name: str) -> list[str]:
    """Ansible's ranges by brute force: every bracket is a list of choices, multiplied out."""
    pieces: list[list[str]] = []
    for literal, first, last, step in re.findall(r"([^\[]*)(?:\[([^:\]]+):([^:\]]+)(?::([0-9]+))?\])?", name):
        pieces.append([literal])
        if first:
            if first.isdigit():
                width = len(first) if first.startswith("0") else 0
                pieces.append([f"{n:0{width}d}" for n in range(int(first), int(last) + 1, int(step or 1))])
            else:
                pieces.append([chr(c) for c in range(ord(first), ord(last) + 1, int(step or 1))])
    return ["".join(parts) for parts in itertools.product(*pieces)]


numeric = st.tuples(st.integers(0, 30), st.integers(0, 30), st.sampled_from([1, 1, 2, 3]), st.booleans()).map(
    lambda t: f"[{min(t[0], t[1]):0{3 if t[3] else 1}d}:{max(t[0], t[1])}" + (f":{t[2]}]" if t[2] > 1 else "]"))
letters = st.tuples(st.sampled_from("abcxyz"), st.sampled_from("abcxyz")).map(
    lambda t: f"[{min(t)}:{max(t)}]")
names = st.lists(st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,4}", fullmatch=True), numeric, letters),
                 min_size=1, max_size=4).map("".join).filter(lambda n: not n.startswith("["))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
def test_ranges_expand_as_the_reference(tmp_path, name):
    inventory = load(write(tmp_path, "hosts", f"[g]\n{name}\n"))
    assert inventory.hosts_of("g") == list(dict.fromkeys(reference_range(name)))


@settings(max_examples=200)
@given(groups=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                              st.lists(st.sampled_from([f"h{i}" for i in range(8)]), max_size=6), min_size=1),
       terms=st.lists(st.tuples(st.sampled_from(["", "&", "!"]), st.sampled_from(["a", "b", "c", "d", "h1", "h5"])),
                      min_size=1, max_size=5))
def test_patterns_combine_as_sets(groups, terms):
    inventory = Inventory()
    for group, hosts in groups.items():
        inventory.add_group(group)
        for host in hosts:
            inventory.add_host(host, group)
    known = set(groups) | set(inventory.hosts)
    pattern = ":".join(op + name for op, name in terms)
    if any(name not in known for _, name in terms):
        with pytest.raises(InventoryError):
            inventory.select(pattern)
        return

    def members(name: str) -> set[str]:
        return set(groups[name]) if name in groups else {name}
    union = [n for op, n in terms if op == ""]
    expected = set().union(*(members(n) for n in union)) if union else set(inventory.hosts)
    for op, name in terms:
        if op == "&":
            expected &= members(name)
    for op, name in terms:
        if op == "!":
            expected -= members(name)
    chosen = inventory.select(pattern)
    assert set(chosen) == expected
    assert len(chosen) == len(set(chosen))
    if all(op == "!" for op, _ in terms[1:]):  # unions then exclusions: clush and pdsh's forms agree
        assert inventory.nodes(",".join(("-" if op == "!" else op) + ("@" if n in groups else "") + n
                                        for op, n in terms)) == chosen


# ----------------------------------------------------------------------------- on the real fleet

@pytest.fixture
def fleet_inventory(fleet, tmp_path) -> Path:
    """The fleet under made-up names, reached through ansible_host (never DNS)."""
    lines = [f"web{i} ansible_host={address}" for i, address in enumerate(fleet.addresses[:3], 1)]
    return write(tmp_path, "hosts", "[web]\n" + "\n".join(lines) + f"""
        [db]
        db1 ansible_host={fleet.addresses[3]}
        [prod]
        web1
        db1
        [all:vars]
        ansible_port={fleet.port}
        ansible_user={KEY_USER}
    """.replace("\n        ", "\n"))


def test_from_inventory_reaches_each_host_at_its_address_port_and_user(fleet, fleet_inventory):
    inventory = load(fleet_inventory)
    with MultiConnection.from_inventory(inventory, "web:!web2", private_key=fleet.client_key) as mc:
        results = mc.execute("whoami; echo $SSH_CONNECTION")
    assert list(results) == ["web1", "web3"]
    for name, address in (("web1", fleet.addresses[0]), ("web3", fleet.addresses[2])):
        user, connection = results[name].stdout.splitlines()
        assert (user, connection.split()[2:]) == (KEY_USER, [address, str(fleet.port)])


def test_hussh_run_with_groups_and_node_sets_from_the_inventory(fleet, fleet_inventory):
    key = ["-i", str(fleet.client_key), "--inventory", str(fleet_inventory)]
    cases = {
        ("-g", "web"): ["web1", "web2", "web3"],
        ("-w", "@web,@db", "-x", "web2"): ["web1", "web3", "db1"],
        ("-a", "-X", "prod"): ["web2", "web3"],
        ("-g", "all", "--limit", "prod"): ["web1", "db1"],
        ("-w", "@web&@prod"): ["web1"],
    }
    for options, expected in cases.items():
        done = hussh("run", "--json", *options, *key, "echo $SSH_CONNECTION")
        assert done.returncode == 0, (options, done.stderr)
        records = [json.loads(line) for line in done.stdout.splitlines()]
        assert sorted(r["host"] for r in records) == sorted(expected), options
        names = {f"web{i}": a for i, a in enumerate(fleet.addresses[:3], 1)} | {"db1": fleet.addresses[3]}
        assert all(r["stdout"].split()[2] == names[r["host"]] for r in records)


def test_hussh_run_with_the_inventory_from_the_environment(fleet, fleet_inventory):
    done = hussh("run", "-q", "-g", "prod", "-i", str(fleet.client_key), "true",
                 HUSSH_INVENTORY=str(fleet_inventory))
    assert (done.returncode, done.stderr.split(" in ")[0]) == (0, "2 ok")


def test_a_missing_group_is_bad_usage_naming_the_inventory(fleet_inventory):
    done = hussh("run", "-g", "nope", "--inventory", str(fleet_inventory), "true")
    assert done.returncode == 2
    assert done.stderr.startswith(f"hussh: no group or host 'nope' in {fleet_inventory} (-g takes an inventory group")
    assert len(done.stderr.splitlines()) == 1
