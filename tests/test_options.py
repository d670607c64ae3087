"""``hussh.ConnectOptions`` and ``hussh.FleetLimits``: the constructors' settings as values, the
keywords mapped onto them in one place, ``from_inventory``'s per-group options, and a MultiConnection
built by one constructor whatever the entry point."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from hussh import Connection, ConnectOptions, FleetLimits, Retry, Rollout
from hussh._spec import ConnectSpec
from hussh.aio import AsyncConnection
from hussh.inventory import InventoryError, load
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER

SAMPLES = {
    "username": "deploy", "port": 2201, "password": "pw", "private_key": "/keys/id_ed25519",
    "proxy_jump": "jump@bastion:2200", "proxy_command": "nc %h %p", "timeout": 7, "connect_timeout": 3,
    "keepalive_interval": 0, "known_hosts": "/keys/known_hosts", "host_key_checking": "strict",
    "max_output": 1000, "forward_agent": True, "ssh_config": False, "stall_timeout": 0,
}
"""A value for every field, none of them its default (``keepalive_interval=0`` is "off", not "not given")."""


def spec_of(**keywords: object):
    return AsyncConnection("web1", **keywords).spec  # type: ignore[arg-type]


def test_every_field_has_a_sample():
    assert set(SAMPLES) == set(ConnectOptions.__struct_fields__)


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_each_keyword_and_its_field_make_the_same_spec(field):
    """The one mapping: each connection keyword of AsyncConnection and from_shared_auth is the field of that name."""
    given = {field: SAMPLES[field]}
    if field == "proxy_command":
        given["proxy_jump"] = "none"
    base = {"ssh_config": False} if field != "ssh_config" else {}
    options = ConnectOptions(**given, **base)  # type: ignore[arg-type]
    expected = spec_of(options=options)
    assert expected != spec_of(ssh_config=False) or field == "ssh_config"  # the sample changes the spec
    assert spec_of(**given, **base) == expected
    shared = {"username": None, "port": None, "timeout": None} | given | base  # positional ones by name
    mc = MultiConnection.from_shared_auth(["web1"], **shared)  # type: ignore[arg-type]
    assert list(mc.specs.values()) == [expected]
    assert list(MultiConnection.from_shared_auth(["web1"], options=options).specs.values()) == [expected]


def test_every_connection_keyword_is_a_field_or_an_alias():
    fields = set(ConnectOptions.__struct_fields__)
    for front_door in (AsyncConnection.__init__, Connection.__init__, MultiConnection.from_shared_auth):
        keywords = set(inspect.signature(front_door).parameters) - {"self", "cls", "host", "hosts", "options"}
        assert keywords - fields <= {"key_path", "batch_size", "limits", "retry", "max_call_output", "workers",
                                     "progress", "engine", "journal"}, front_door


def test_a_keyword_given_beats_the_options_field_and_one_left_at_its_default_does_not():
    options = ConnectOptions(username="bob", port=2222, timeout=5, connect_timeout=2, keepalive_interval=3,
                             max_output=10, stall_timeout=4, ssh_config=False)
    spec = spec_of(options=options)  # every keyword at its default: the options stand
    assert (spec.username, spec.port, spec.timeout, spec.connect_timeout, spec.keepalive_interval,
            spec.max_output, spec.stall_timeout) == ("bob", 2222, 5, 2, 3, 10, 4)
    spec = spec_of(options=options, username="alice", port=22, timeout=0, keepalive_interval=0)
    assert (spec.username, spec.port, spec.timeout, spec.keepalive_interval) == ("alice", 22, 0, 0)
    specs = MultiConnection.from_shared_auth(["carol@web1:2300", "web2"], options=options, port=2400).specs
    assert [(s.username, s.port) for s in specs.values()] == [("carol", 2300), ("bob", 2400)]  # its own beats both


def test_key_path_is_private_keys_alias_and_both_is_upstreams_type_error():
    assert spec_of(key_path="/k", ssh_config=False).private_key == "/k"
    options = ConnectOptions(private_key="/a", ssh_config=False)
    assert spec_of(options=options, key_path="/b").private_key == "/b"
    with pytest.raises(TypeError, match="key_path and private_key are aliases"):
        spec_of(key_path="/a", private_key="/b")


@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"port": 0}, ValueError, "port must be an integer in 1..65535, got 0"),
    ({"port": "22"}, ValueError, "port must be an integer in 1..65535, got '22'"),
    ({"timeout": -1}, ValueError, "timeout must be a number of seconds >= 0, got -1"),
    ({"stall_timeout": "soon"}, ValueError, "stall_timeout must be a number of seconds >= 0, got 'soon'"),
    ({"host_key_checking": "ask"}, ValueError, "host_key_checking must be 'accept-new', 'strict' or 'off'"),
    ({"max_output": 0}, ValueError, "max_output must be a positive number of bytes, got 0"),
    ({"username": 7}, ValueError, "username must be a string, got 7"),
    ({"forward_agent": "yes"}, ValueError, "forward_agent must be true or false, got 'yes'"),
    ({"ssh_config": 3}, ValueError, "ssh_config must be a path, a list of paths, or false, got 3"),
    ({"proxy_jump": "b", "proxy_command": "nc"}, TypeError, "proxy_jump and proxy_command are mutually exclusive"),
    ({"proxy_jump": "b:ssh"}, TypeError, "proxy_jump port must be a valid integer"),
    ({"nope": 1}, TypeError, "Unexpected keyword argument 'nope'"),
])
def test_a_bad_value_is_one_clear_error_from_the_constructor_replace_and_every_front_door(fields, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        ConnectOptions(**fields)
    with pytest.raises(error, match="nope" if "nope" in fields else message.split(" ")[0]):
        ConnectOptions().replace(**fields)
    with pytest.raises(error, match="nope" if "nope" in fields else message.split(" ")[0]):
        spec_of(**fields)


def test_options_are_frozen_copied_by_replace_merged_by_over_and_never_show_the_password():
    options = ConnectOptions(username="bob", password="s3cret", proxy_jump=("bastion", 2200),
                             private_key=Path("/k"), ssh_config=[Path("/a"), "/b"])
    with pytest.raises(AttributeError):
        options.username = "eve"  # type: ignore[misc]
    assert (options.proxy_jump, options.private_key, options.ssh_config) == ("bastion:2200", "/k", ("/a", "/b"))
    assert options.replace(port=2) == ConnectOptions(username="bob", password="s3cret", port=2,
                                                     proxy_jump="bastion:2200", private_key="/k",
                                                     ssh_config=("/a", "/b"))
    assert options.replace(port=2).port == 2 and options.port is None
    assert "s3cret" not in repr(options) and "password='***'" in repr(options) and "s3cret" not in str(options)
    assert repr(ConnectOptions(port=2)) == "ConnectOptions(port=2)"
    merged = ConnectOptions(proxy_command="nc %h %p", port=3).over(options)
    assert (merged.username, merged.port, merged.proxy_jump, merged.proxy_command) == ("bob", 3, None, "nc %h %p")
    assert ConnectOptions().over(options) is options
    with pytest.raises(TypeError, match="options must be a hussh.ConnectOptions, got {'port': 2}"):
        AsyncConnection("web1", options={"port": 2})  # type: ignore[arg-type]


def test_a_connection_as_bastion_is_kept_as_its_spec():
    bastion = AsyncConnection("127.0.0.9", username="jump", ssh_config=False)
    assert ConnectOptions(proxy_jump=bastion).proxy_jump is bastion.spec
    assert spec_of(options=ConnectOptions(proxy_jump=bastion, ssh_config=False)).jump is bastion.spec


def test_connection_takes_options_in_seconds_and_its_timeout_keyword_in_milliseconds(fleet):
    options = ConnectOptions(username=PASSWORD_USER, password=PASSWORD, port=fleet.port, timeout=7)
    with Connection(fleet.addresses[0], options=options) as conn:
        assert conn.timeout == 7000 and conn.execute("whoami").stdout == f"{PASSWORD_USER}\n"
    with Connection(fleet.addresses[0], options=options, timeout=3000) as conn:
        assert conn.spec.timeout == 3.0


# --- FleetLimits and the one constructor of MultiConnection

def test_limits_are_validated_frozen_and_the_keywords_beat_them():
    for fields, message in (({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
                            ({"workers": 0}, "workers must be a positive integer, got 0"),
                            ({"max_call_output": -1}, "max_call_output must be a positive number of bytes"),
                            ({"retry": {"attempts": 2}}, "retry must be a hussh.Retry"),
                            ({"rollout": "canary"}, "rollout must be a hussh.Rollout")):
        with pytest.raises((TypeError, ValueError), match=message):
            FleetLimits(**fields)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        FleetLimits().replace(batch_size=0)
    limits = FleetLimits(batch_size=7, workers=2, retry=Retry(attempts=3), max_call_output=1 << 20)
    with pytest.raises(AttributeError):
        limits.batch_size = 1  # type: ignore[misc]
    specs = [AsyncConnection(f"127.0.0.{i}", ssh_config=False) for i in (1, 2)]
    mc = MultiConnection(specs, limits=limits)
    assert mc.limits == limits and mc.batch_size == 7
    mc = MultiConnection(specs, 5, limits=limits, workers=1)
    assert (mc.batch_size, mc.limits.workers, mc.limits.retry.attempts) == (5, 1, 3)
    mc = MultiConnection.from_shared_auth(["a", "b"], limits=limits, batch_size=3, ssh_config=False)
    assert (mc.batch_size, mc.limits.workers) == (3, 2)
    with pytest.raises(TypeError, match="limits must be a hussh.FleetLimits"):
        MultiConnection(specs, limits={"batch_size": 3})  # type: ignore[arg-type]


def test_one_constructor_takes_specs_and_their_result_keys():
    specs: list[AsyncConnection | ConnectSpec] = [AsyncConnection("127.0.0.1", ssh_config=False).spec,
             AsyncConnection("127.0.0.1", port=2, ssh_config=False)]
    assert MultiConnection(specs).hosts == ["127.0.0.1:22", "127.0.0.1:2"]  # same name twice: widened, as before
    assert MultiConnection(specs, names=["a", "b"]).hosts == ["a", "b"]
    with pytest.raises(ValueError, match="names gives 1 keys for 2 connections"):
        MultiConnection(specs, names=["a"])
    with pytest.raises(TypeError, match="names must be a list"):
        MultiConnection(specs, names="ab")
    assert not hasattr(MultiConnection, "_init")


def test_the_limits_rollout_is_every_calls_unless_it_gives_its_own(fleet, remote_dir):
    """A default rollout in the limits: a failed canary starts nothing else; ``Rollout()`` runs without one."""
    first = fleet.addresses[0]
    command = (f'set -- $SSH_CONNECTION; touch {remote_dir}/$3; [ "$3" != {first} ]')
    limits = FleetLimits(rollout=Rollout(canary=1))
    with MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, limits=limits) as mc:
        results = mc.execute(command)
        assert list(results.failed) == [first] and len(results.skipped) == len(fleet.addresses) - 1
        assert {p.name for p in remote_dir.iterdir()} == {first}
        assert not mc.execute(command, rollout=Rollout()).skipped
    assert {p.name for p in remote_dir.iterdir()} == set(fleet.addresses)


# --- from_inventory's group options

@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("[web]\nweb1\nweb2 ansible_user=own\n[db]\ndb1\nweb2\n[prod:children]\nweb\n")
    return load(path)


def test_group_options_apply_to_their_hosts_later_groups_first_and_a_hosts_own_values_above_all(inventory):
    mc = MultiConnection.from_inventory(
        inventory, "all", options=ConnectOptions(username="shared", ssh_config=False), port=2200,
        group_options={"web": ConnectOptions(username="webuser", timeout=5), "db": ConnectOptions(port=2300)},
    )
    specs = mc.specs
    assert {h: (s.username, s.port, s.timeout) for h, s in specs.items()} == {
        "web1": ("webuser", 2200, 5.0), "web2": ("own", 2300, 5.0), "db1": ("shared", 2300, 0.0)}
    mc = MultiConnection.from_inventory(inventory, "web1", ssh_config=False, batch_size=3, workers=1,
                                        group_options={"prod": ConnectOptions(username="p")})
    assert (next(iter(mc.specs.values())).username, mc.batch_size, mc.limits.workers) == ("p", 3, 1)
    with pytest.raises(InventoryError, match="no group 'nope'"):
        MultiConnection.from_inventory(inventory, "web1", group_options={"nope": ConnectOptions()})
    with pytest.raises(TypeError, match="from_inventory.. got an unexpected keyword argument 'usernme'"):
        MultiConnection.from_inventory(inventory, "web1", usernme="x")


def test_from_inventory_options_reach_the_fleet(fleet, tmp_path):
    path = tmp_path / "hosts"
    path.write_text(f"[web]\nw1 ansible_host={fleet.addresses[0]}\n[db]\nd1 ansible_host={fleet.addresses[1]}\n")
    with MultiConnection.from_inventory(
            load(path), options=ConnectOptions(username=KEY_USER, port=fleet.port),
            group_options={"web": ConnectOptions(private_key=fleet.client_key),
                           "db": ConnectOptions(username=PASSWORD_USER, password=PASSWORD)}) as mc:
        results = mc.execute("whoami")
    assert {h: r.stdout or r.stderr for h, r in results.items()} == {"w1": f"{KEY_USER}\n", "d1": f"{PASSWORD_USER}\n"}
