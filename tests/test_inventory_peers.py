"""What operators of Ansible, clush and pdsh expect of an inventory: Ansible's subscripts
(``web[0:2]``) and ``group_vars/``/``host_vars/`` directories, clush's left-to-right node set
operators with ``^`` and ``/step`` ranges, pdsh's dsh group files; each against a reference, and
end to end on the real fleet."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clirun import hussh
from hussh.hostlist import expand
from hussh.inventory import HostVars, Inventory, InventoryError, load
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def inventory_of(groups: dict[str, list[str]]) -> Inventory:
    inventory = Inventory()
    for group, hosts in groups.items():
        inventory.add_group(group)
        for host in hosts:
            inventory.add_host(host, group)
    return inventory


# ----------------------------------------------------------------------------- Ansible subscripts

def reference_subscript(hosts: list[str], first: int | None, last: int | None) -> list[str]:
    """Ansible's documented slice: the items k with first <= k <= last (first omitted: 0, last: the end)."""
    low = 0 if first is None else first
    high = len(hosts) - 1 if last is None else last
    return [host for k, host in enumerate(hosts) if low <= k <= high]


@settings(max_examples=300)
@given(size=st.integers(1, 8), first=st.one_of(st.none(), st.integers(0, 10)),
       last=st.one_of(st.none(), st.integers(0, 10)), index=st.integers(-10, 10))
def test_subscripts_slice_as_ansible_documents(size, first, last, index):
    hosts = [f"h{i}" for i in range(size)]
    inventory = inventory_of({"web": hosts, "db": ["d1"]})
    if first is not None or last is not None:
        text = f"web[{'' if first is None else first}:{'' if last is None else last}]"
        assert inventory.select(text) == reference_subscript(hosts, first, last)
        assert inventory.select(f"{text}:db") == [*reference_subscript(hosts, first, last), "d1"]
    if -size <= index < size:
        assert inventory.select(f"web[{index}]") == [hosts[index]]
        assert inventory.select(f"web:!web[{index}]") == [h for h in hosts if h != hosts[index]]
    else:
        with pytest.raises(InventoryError, match=rf"^no host at position {index} in pattern 'web\[{index}\]' "):
            inventory.select(f"web[{index}]")


def test_subscripts_of_wildcards_and_ranges_of_hosts(tmp_path):
    inventory = load(write(tmp_path / "hosts", "[web]\nweb[1:4]\n[webdb]\nwd1\n"))
    assert inventory.select("web[0:1]") == ["web1", "web2"]
    assert inventory.select("web*[-1]") == ["wd1"]  # over what web* matches: web's hosts, then webdb's
    assert inventory.select("web[1:3]") == ["web2", "web3", "web4"]  # web is a group: a subscript, as in Ansible
    assert inventory.select("webdb:web[2:3]") == ["wd1", "web3", "web4"]
    with pytest.raises(InventoryError, match=r"^bad subscript in pattern 'web\[:\]'"):
        inventory.select("web[:]")


# ----------------------------------------------------------------------------- clush node sets

def reference_nodes(steps: list[tuple[str, set[str]]], everything: list[str]) -> set[str]:
    """ClusterShell's extended pattern: each operator applied to what is left of it, left to right."""
    result = set(everything) if steps[0][0] in "!&" else set()
    for op, hosts in steps:
        result = {",": result | hosts, "!": result - hosts, "&": result & hosts, "^": result ^ hosts}[op]
    return result


@settings(max_examples=300)
@given(groups=st.dictionaries(st.sampled_from("abcd"), st.lists(st.sampled_from([f"h{i}" for i in range(6)]),
                                                                max_size=5), min_size=1),
       steps=st.lists(st.tuples(st.sampled_from(",!&^"), st.sampled_from(["a", "b", "c", "d", "h1", "h7"])),
                      min_size=1, max_size=6))
def test_node_set_operators_apply_left_to_right_as_clush(groups, steps):
    inventory = inventory_of(groups)
    steps[0] = (steps[0][0] if steps[0][0] in ",!&" else ",", steps[0][1])
    text = "".join(("" if i == 0 and op == "," else op) + (f"@{name}" if name in "abcd" else name)
                   for i, (op, name) in enumerate(steps))
    if any(name in "abcd" and name not in groups for _, name in steps):
        with pytest.raises(InventoryError, match="no group"):
            inventory.nodes(text)
        return
    members = [(op, set(groups[name]) if name in groups else {name}) for op, name in steps]
    chosen = inventory.nodes(text)
    assert set(chosen) == reference_nodes(members, inventory.hosts)
    assert len(chosen) == len(set(chosen))


def test_node_set_examples_from_clush_and_pdsh():
    inventory = inventory_of({"web": ["w1", "w2", "w3"], "down": ["w2", "d9"], "gpu": ["w3", "g1"]})
    assert inventory.nodes("@web!@down,d9") == ["w1", "w3", "d9"]  # ! before the comma only
    assert inventory.nodes("@web&@gpu,g1") == ["w3", "g1"]
    assert inventory.nodes("@web^@gpu") == ["w1", "w2", "g1"]
    assert inventory.nodes("-w1,@web") == ["w2", "w3"]  # pdsh's -host leaves the whole list
    assert inventory.nodes("n[1-9/4]^n5") == ["n1", "n9"]
    with pytest.raises(InventoryError, match=r"^empty term after '\^' in pattern '@web\^'$"):
        inventory.nodes("@web^")


@settings(max_examples=300)
@given(first=st.integers(0, 40), length=st.integers(0, 40), step=st.integers(1, 7), width=st.integers(1, 3))
def test_range_steps_expand_as_the_reference(first, length, step, width):
    last = first + length
    expected = [f"n{k:0{width}d}" for k in range(first, last + 1, step)]
    assert expand(f"n[{first:0{width}d}-{last:0{width}d}/{step}]") == expected


# ----------------------------------------------------------------------------- group_vars and host_vars

def test_group_vars_and_host_vars_beside_the_inventory(tmp_path):
    hosts = write(tmp_path / "hosts", """
        [web]
        web1 ansible_user=inline
        web2
        [prod:children]
        web
        [prod:vars]
        ansible_port=2000
        [db]
        db1
    """)
    write(tmp_path / "group_vars" / "all.yml", """
        ---
        # everything else of a real group_vars file is left alone
        ntp_servers:
          - 10.0.0.1
        motd: |
          ansible_user: not-a-variable (inside a block scalar)
        secret: !vault |
          $ANSIBLE_VAULT;1.1;AES256
        ansible_user: everyone   # a comment
        ansible_port: 1000
    """)
    write(tmp_path / "group_vars" / "web" / "10-connection.yaml", "ansible_port: 2201\n")
    write(tmp_path / "group_vars" / "web" / "20-more" / "user.yml", "ansible_user: 'webuser'\n")
    write(tmp_path / "group_vars" / "web" / "notes.txt", "ansible_user: ignored (not a vars extension)\n")
    write(tmp_path / "host_vars" / "web2.json", json.dumps({"ansible_host": "10.9.9.2", "app": {"x": 1}}))
    write(tmp_path / "host_vars" / "db1", "ansible_ssh_host: 10.9.9.3\n")
    write(tmp_path / "host_vars" / "nope.yml", "ansible_host: 1.1.1.1\n")  # no such host: ignored
    inventory = load(hosts)
    assert inventory.vars("web1") == HostVars(None, 2201, "inline")  # group_vars/web beats [prod:vars]
    assert inventory.vars("web2") == HostVars("10.9.9.2", 2201, "webuser")
    assert inventory.vars("db1") == HostVars("10.9.9.3", 1000, "everyone")  # all's, the weakest
    assert "nope" not in inventory.hosts


def test_host_vars_files_beat_inline_host_vars_and_dirs_inventories_have_them_too(tmp_path):
    write(tmp_path / "inv" / "hosts.yml", "web:\n  hosts:\n    web1:\n      ansible_host: 10.0.0.1\n")
    write(tmp_path / "inv" / "host_vars" / "web1.yml", "ansible_host: 10.0.0.2\n")
    assert load(tmp_path / "inv").vars("web1").address == "10.0.0.2"
    assert load(tmp_path / "inv" / "hosts.yml").vars("web1").address == "10.0.0.2"


def test_same_depth_groups_take_the_later_name_and_all_comes_last(tmp_path):
    inventory = load(write(tmp_path / "hosts", """
        [all:vars]
        ansible_user=zz-all
        [a]
        h1
        [b]
        h1
        [a:vars]
        ansible_user=a
        [b:vars]
        ansible_user=b
    """))
    assert inventory.vars("h1").user == "b"  # Ansible: groups at one depth load by name, the last one wins


@pytest.mark.parametrize(("name", "text", "message"), [
    ("all.yml", "x: 1\nansible_port: http\n", "all.yml:2: bad ansible_port 'http'"),
    ("all.yml", "ansible_host: \"{{ inventory_hostname }}.lan\"\n", "all.yml:1: ansible_host "),
    ("all.yml", "ansible_user:\n  - a\n", "all.yml:1: ansible_user wants a value on its line"),
    ("all.json", '{"ansible_port": 1,}', "all.json:1: not JSON"),
])
def test_bad_vars_files_are_one_line_naming_file_and_line(tmp_path, name, text, message):
    write(tmp_path / "group_vars" / name, text)
    with pytest.raises(InventoryError) as raised:
        load(write(tmp_path / "hosts", "web1\n"))
    assert message in str(raised.value)
    assert str(raised.value).startswith(str(tmp_path / "group_vars"))
    assert "\n" not in str(raised.value)


def test_group_vars_all_reaches_the_fleet(fleet, tmp_path):
    lines = "\n".join(f"web{i} ansible_host={address}" for i, address in enumerate(fleet.addresses[:2], 1))
    hosts = write(tmp_path / "hosts", f"[web]\n{lines}\n")
    write(tmp_path / "group_vars" / "all.yml", f"ansible_port: {fleet.port}\n")
    write(tmp_path / "host_vars" / "web2.yml", f"ansible_user: {KEY_USER}\n")
    write(tmp_path / "group_vars" / "web.yml", "ansible_user: nobody-such\n")
    inventory = load(hosts)
    with MultiConnection.from_inventory(inventory, "web", private_key=fleet.client_key) as mc:
        results = mc.execute("whoami")
    assert results["web2"].stdout.strip() == KEY_USER  # host_vars beat group_vars: the login works
    assert "web1" in results.failed  # web1 logs in as group_vars/web's user, whom the fleet refuses


# ----------------------------------------------------------------------------- dsh group files

@pytest.fixture
def dsh_dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """~/.dsh/group (HOME is each test's own) and one $DSHGROUP_PATH directory."""
    user, system = Path(os.environ["HOME"]) / ".dsh" / "group", tmp_path / "etc-dsh-group"
    user.mkdir(parents=True)
    system.mkdir()
    monkeypatch.setenv("DSHGROUP_PATH", f"{tmp_path / 'missing'}:{system}")
    return user, system


def test_dsh_groups_are_found_as_pdsh_finds_them(dsh_dirs):
    from hussh._inventory_dsh import groups

    user, system = dsh_dirs
    write(system / "web", "web[1-3]  # the system's\n")
    write(user / "web", "mine1,mine2\n")  # ~/.dsh/group first
    write(system / "db", "#include common\ndeploy@db1 db2\n\n# only a comment\n#include db\n")  # a loop: skipped
    write(system / "common", "c1\n")
    inventory = groups()
    assert inventory.nodes("@web") == ["mine1", "mine2"]
    assert inventory.select("db") == ["c1", "deploy@db1", "db2"]
    assert set(inventory.groups()) == {"web", "db", "common"}
    for name in ("../etc/passwd", ".hidden", "nope"):
        with pytest.raises(InventoryError, match="no group"):
            inventory.nodes(f"@{name}")


@pytest.mark.parametrize(("text", "message"), [
    ("ok1\nweb[3-1]\n", "web:2: bad range '3-1'"),
    ("#include nowhere\n", "web:1: #include nowhere: no such file in "),
    ("\xff\n", "web:1: not UTF-8 text"),
])
def test_bad_dsh_group_files_are_one_line_naming_file_and_line(dsh_dirs, text, message):
    from hussh._inventory_dsh import groups

    user, _ = dsh_dirs
    (user / "web").write_bytes(text.encode("latin-1"))
    with pytest.raises(InventoryError) as raised:
        groups().nodes("@web")
    assert str(raised.value).startswith(str(user))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_dsh_includes_nest_boundedly(dsh_dirs):
    from hussh._inventory_dsh import MAX_INCLUDE_DEPTH, groups

    user, _ = dsh_dirs
    for i in range(MAX_INCLUDE_DEPTH + 5):
        write(user / f"g{i}", f"#include g{i + 1}\nh{i}\n")
    with pytest.raises(InventoryError, match=f"#include nested more than {MAX_INCLUDE_DEPTH} deep"):
        groups().nodes("@g0")


def test_dsh_directory_as_an_inventory(tmp_path):
    write(tmp_path / "groups" / "web", "w1\nw2\n")
    write(tmp_path / "groups" / "db", "d1\n")
    assert load(f"dsh:{tmp_path / 'groups'}").select("web:db") == ["w1", "w2", "d1"]
    assert load(f"dsh:{tmp_path / 'groups'}").all_hosts() == ["d1", "w1", "w2"]  # every group's, in name order


def test_hussh_run_with_a_dsh_group(fleet, dsh_dirs, tmp_path):
    user, system = dsh_dirs
    targets = [f"{KEY_USER}@{address}:{fleet.port}" for address in fleet.addresses[:3]]
    write(system / "web", "\n".join(targets[:2]) + "\n")  # dsh writes user@host
    write(user / "canary", targets[1] + "\n")
    key = ["-i", str(fleet.client_key)]
    dsh = str(system)
    done = hussh("run", "--json", "-g", "web", "-X", "canary", *key, "echo $SSH_CONNECTION", DSHGROUP_PATH=dsh)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["stdout"].split()[2] for line in done.stdout.splitlines()] == [fleet.addresses[0]]
    done = hussh("run", "-q", "-w", "@web,@canary", *key, "true", DSHGROUP_PATH=dsh)
    assert (done.returncode, done.stderr.split(" in ")[0]) == (0, "2 ok")
    done = hussh("run", "-a", *key, "true", DSHGROUP_PATH=dsh)  # -a is the inventory's hosts: dsh groups are not in it
    assert done.returncode == 2 and "no hosts given" in done.stderr


def test_a_host_range_with_a_port(tmp_path):
    inventory = load(write(tmp_path / "hosts", "[web]\nweb[1:2]:2222\n"))
    assert [inventory.vars(h).port for h in inventory.hosts_of("web")] == [2222, 2222]
