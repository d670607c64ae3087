"""The command line's config file (``--config``, ``$HUSSH_CONFIG``, ``~/.config/hussh/hussh.conf``): read into
``ConnectOptions``/``FleetLimits``, per inventory group, under the flags; a mistake in it is one line, exit 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from clirun import hussh
from hussh import ConnectOptions, FleetLimits, Retry, Rollout, cli
from hussh._cli_args import config_of, connect, parse
from hussh._cli_runs import setup
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def inventory(tmp_path) -> Path:
    return write(tmp_path / "hosts", """\
        [web]
        web1 ansible_host=127.0.0.1
        web2 ansible_host=127.0.0.2 ansible_user=own
        [db]
        db1 ansible_host=127.0.0.3
        web2
        [other]
        lone ansible_host=127.0.0.4
        """)


def specs(*argv: str) -> dict[str, tuple[str, int, float]]:
    mc = connect(parse(["run", *argv, "true"]))
    return {host: (spec.username, spec.port, spec.connect_timeout) for host, spec in mc.specs.items()}


def test_defaults_then_groups_then_flags_then_what_a_host_says(inventory, tmp_path):
    config = write(tmp_path / "hussh.conf", """\
        [defaults]
        username = "deploy"
        port = 2201
        connect_timeout = 4
        batch_size = 7
        retry = { attempts = 3, cooldown = 30 }
        rollout = { canary = 1, waves = "50%" }

        [groups.web]
        username = "webuser"

        [groups.db]
        port = 2300

        [groups.absent]
        username = "nobody"
        """)
    common = ("--inventory", str(inventory), "--config", str(config), "-a")
    assert specs(*common) == {"web1": ("webuser", 2201, 4.0), "web2": ("own", 2300, 4.0),
                              "db1": ("deploy", 2300, 4.0), "lone": ("deploy", 2201, 4.0)}  # later groups first
    assert specs(*common, "-l", "flag", "--port", "2022", "-t", "9") == {
        "web1": ("flag", 2022, 9.0), "web2": ("own", 2022, 9.0), "db1": ("flag", 2022, 9.0),
        "lone": ("flag", 2022, 9.0)}
    mc = connect(parse(["run", *common, "true"]))
    assert mc.limits == FleetLimits(batch_size=7, retry=Retry(attempts=3, cooldown=30.0),
                                    rollout=Rollout(canary=1, waves="50%"))
    mc = connect(parse(["run", *common, "-f", "3", "--max-fail", "2", "true"]))
    assert (mc.batch_size, mc.limits.rollout) == (3, Rollout(canary=1, waves="50%", max_failures="2"))
    assert connect(parse(["run", *common, "--config", str(tmp_path / "hussh.conf"), "true"])).limits.workers is None


def test_the_file_is_the_flag_else_the_environment_else_the_users_own(tmp_path, isolated_home, monkeypatch):
    assert config_of(parse(["run", "-H", "h", "true"])).path is None  # none: the built-in defaults
    (isolated_home / ".config" / "hussh").mkdir(parents=True)
    write(isolated_home / ".config" / "hussh" / "hussh.conf", "[defaults]\nport = 1\n")
    assert config_of(parse(["run", "-H", "h", "true"])).options == ConnectOptions(port=1)
    (tmp_path / "xdg" / "hussh").mkdir(parents=True)
    write(tmp_path / "xdg" / "hussh" / "hussh.conf", "[defaults]\nport = 2\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_of(parse(["run", "-H", "h", "true"])).options == ConnectOptions(port=2)
    monkeypatch.setenv("HUSSH_CONFIG", str(write(tmp_path / "env.conf", "[defaults]\nport = 3\n")))
    assert config_of(parse(["run", "-H", "h", "true"])).options == ConnectOptions(port=3)
    flag = write(tmp_path / "flag.conf", "[defaults]\nport = 4\n")
    assert config_of(parse(["run", "--config", str(flag), "-H", "h", "true"])).options == ConnectOptions(port=4)


def test_ssh_options_apply_over_the_files_ssh_config(inventory, tmp_path):
    ssh_config = write(tmp_path / "ssh_config", "Host *\n    User fromsshconfig\n    ConnectTimeout 6\n")
    config = write(tmp_path / "hussh.conf", f'[defaults]\nssh_config = "{ssh_config}"\n')
    common = ("--inventory", str(inventory), "--config", str(config), "-w", "web1")
    assert specs(*common) == {"web1": ("fromsshconfig", 22, 6.0)}
    assert specs(*common, "-o", "ConnectTimeout=2") == {"web1": ("fromsshconfig", 22, 2.0)}


BAD = [
    ("[defaults]\nport = 0\n", "[defaults] port must be an integer in 1..65535, got 0"),
    ("[defaults]\nport = \"22\"\n", "[defaults] port must be an integer in 1..65535, got '22'"),
    ("[defaults]\nusr = \"x\"\n", "[defaults] unknown key 'usr' (the keys are: username, port, private_key"),
    ("[defaults]\npassword = \"x\"\n", "[defaults] password: a password is never read from a file"),
    ("[defaults]\nbatch_size = 0\n", "[defaults] batch_size must be a positive integer, got 0"),
    ("[defaults]\nretry = { attempts = \"x\" }\n", "[defaults.retry] attempts must be an integer, got 'x'"),
    ("[defaults]\nrollout = { waves = \"0\" }\n", "[defaults.rollout] "),
    ("[groups.web]\nbatch_size = 5\n", "[groups.web] batch_size: a fleet limit applies to the whole run"),
    ("[groups.web]\nbatch_size = 5\n", "set it in [defaults]"),
    ("[defaults]\nretry = { attempts = 0 }\n", "[defaults.retry] bad Retry(cooldown=60.0, attempts=0"),
    ("[defaults]\nretry = { tries = 2 }\n", "[defaults.retry] unknown key 'tries' (the keys are: cooldown, attempts"),
    ("[group.web]\nport = 2\n", "unknown section [group] (the sections are [defaults] and [groups.NAME])"),
    ("[defaults]\nport = = 2\n", "Invalid value (at line 2, column 8)"),
    ("[defaults]\nhost_key_checking = \"ask\"\n", "[defaults] host_key_checking must be 'accept-new', 'strict'"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_mistake_in_the_file_is_one_line_naming_it_and_exit_2(text, message, tmp_path, capsys):
    config = write(tmp_path / "hussh.conf", text)
    assert cli.main(["run", "--config", str(config), "-H", "127.0.0.1", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hussh: {config}: ") and message in err and len(err.splitlines()) == 1, err


def test_a_missing_file_named_by_the_flag_or_the_environment_is_exit_2(tmp_path, monkeypatch, capsys):
    assert cli.main(["run", "--config", str(tmp_path / "nope"), "-H", "127.0.0.1", "true"]) == 2
    assert capsys.readouterr().err == f"hussh: cannot read config file {tmp_path / 'nope'}: No such file or directory\n"
    monkeypatch.setenv("HUSSH_CONFIG", str(tmp_path / "nope"))
    assert cli.main(["run", "-H", "127.0.0.1", "true"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_the_files_settings_reach_the_fleet_per_group(fleet, tmp_path):
    inventory = write(tmp_path / "hosts", f"""\
        [web]
        w1 ansible_host={fleet.addresses[0]}
        [db]
        d1 ansible_host={fleet.addresses[1]}
        """)
    config = write(tmp_path / "hussh.conf", f"""\
        [defaults]
        port = {fleet.port}
        username = "{KEY_USER}"
        [groups.web]
        private_key = "{fleet.client_key}"
        [groups.db]
        username = "{PASSWORD_USER}"
        """)
    done = hussh("run", "--inventory", str(inventory), "-a", "-L", "whoami", HUSSH_CONFIG=str(config),
                 HUSSH_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"d1: {PASSWORD_USER}", f"w1: {KEY_USER}"]
    done = hussh("run", "--inventory", str(inventory), "-g", "db", "-l", KEY_USER, "-i", str(fleet.client_key),
                 "-L", "whoami", HUSSH_CONFIG=str(config))
    assert (done.returncode, done.stdout) == (0, f"d1: {KEY_USER}\n"), done.stderr  # the flags beat the group's


def test_a_replay_restores_the_options_given_not_the_files_values(fleet, tmp_path):
    """The journal records the flags given (None for the others): ``--retry-failed`` takes the file's values again."""
    config = write(tmp_path / "hussh.conf", f'[defaults]\ntimeout = 30\nusername = "{KEY_USER}"\n')
    journal = str(tmp_path / "journal.db")
    login = ["-i", str(fleet.client_key), "--port", str(fleet.port), "--config", str(config), "--journal", journal]
    assert hussh("run", *login, "-q", "-H", fleet.addresses[0], "-f", "3", "exit 1").returncode == 1
    args = parse(["run", "--retry-failed", "last", "--config", str(config), "--journal", journal])
    assert setup(args) is None
    mc = connect(args)
    spec = next(iter(mc.specs.values()))
    assert (spec.timeout, spec.username, spec.port, mc.batch_size) == (
        30.0, KEY_USER, fleet.port, 3)


def test_a_key_the_file_names_is_checked_before_connecting_for_the_hosts_chosen(inventory, tmp_path, capsys):
    config = write(tmp_path / "hussh.conf", f'[groups.db]\nprivate_key = "{tmp_path / "missing"}"\n')
    common = ("--inventory", str(inventory), "--config", str(config))
    assert list(specs(*common, "-w", "web1")) == ["web1"]  # no host of db: its key is not needed
    assert cli.main(["run", *common, "-g", "db", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hussh: ") and str(tmp_path / "missing") in err and len(err.splitlines()) == 1, err
