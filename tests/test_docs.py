"""Every Python and shell example in docs/ runs, as written, against the loopback fleet.

The examples name hosts as an operator would (``web1``, ``web2``, ``web3``, ``db1``, ``bastion``)
and carry no credentials: ``docs_home`` writes the ``~/.ssh/config`` that maps those names to the
fleet, with the fleet's key, exactly as a real fleet is described. Password examples read
``SSH_USER``/``SSH_PASSWORD`` from the environment, as scripts should. The Python blocks of one
page run in order in one namespace (a page is one story); each shell block runs alone in bash.
A page may start with ``<!-- docs-test: requires=mod,... teardown="code" ports=N,... -->``: it is
skipped when a module is missing, ``code`` runs in its namespace after its blocks, even on failure,
and the fleets its examples start on the ports named move to this session's port. So do the fleets
of ``hussh fleet up`` in its shell blocks, which would take the defaults of a user's own fleet
(127.70.x.y:2200, compose at 127.0.0.1:22000): a test run and a user's fleet share the machine.
A block right after a ``<!-- docs-test: skip-next -->`` line does not run (an example of a feature
still being built; the marker goes when it lands).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_PORT
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
NAMES = ("web1", "web2", "web3", "db1")
OPTIONS = re.compile(r"\A<!-- docs-test:(.*?)-->")
OPTION = re.compile(r'(\w+)=(?:"([^"]*)"|(\S+))')
SKIP_NEXT = "<!-- docs-test: skip-next -->"


def examples(page: Path, language: str) -> list[tuple[int, str]]:
    """The fenced ``language`` blocks of ``page``: (line number, code), without those marked ``SKIP_NEXT``."""
    text = page.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1) == language and not text[:m.start()].rstrip().endswith(SKIP_NEXT)]


RUN_ELSEWHERE = {"cli.md": "tests/test_cli_docs.py"}
"""Pages whose examples a dedicated test runs (it also checks the output they show)."""


def page_options(page: Path) -> dict[str, str]:
    """The page's ``docs-test`` options (``requires``, ``teardown``), skipping it if a module is missing."""
    found = OPTIONS.match(page.read_text())
    options = {key: quoted or bare for key, quoted, bare in OPTION.findall(found.group(1))} if found else {}
    for module in filter(None, options.get("requires", "").split(",")):
        pytest.importorskip(module, reason=f"{page.name} needs {module}")
    return options


FLEET_UP = re.compile(r"\b(?:hussh fleet|python -m hussh\.testing) up \d+")
# Compose host ports 28000-28999: apart from the session fleets' (26000 + TEST_PORT % 300 * 20) and the plugin tests'.
SESSION_FLEET = f" --port {TEST_PORT} --base-port {28000 + TEST_PORT % 100 * 10} --project hussh-docs-{TEST_PORT}"


def own_ports(code: str, options: dict[str, str]) -> str:
    """``code`` with its fleets on this session's port: the page's ``ports`` replaced, ``fleet up`` given it."""
    for port in filter(None, options.get("ports", "").split(",")):
        code = re.sub(rf"\b{port}\b", str(TEST_PORT), code)
    return FLEET_UP.sub(lambda up: up.group(0) + SESSION_FLEET, code)


def pages(language: str) -> list[Path]:
    return [page for page in sorted(DOCS.glob("*.md")) if examples(page, language) and page.name not in RUN_ELSEWHERE]


def test_pages_run_elsewhere_have_their_runner():
    for page, runner in RUN_ELSEWHERE.items():
        assert (DOCS / page).is_file() and (REPO_ROOT / runner).is_file()
        assert page in (REPO_ROOT / runner).read_text()


@pytest.fixture
def docs_home(fleet, isolated_home, tmp_path, monkeypatch) -> Path:
    """The fleet described the way operators describe theirs: names, user, port and key in ~/.ssh/config."""
    ssh = isolated_home / ".ssh"
    ssh.mkdir(exist_ok=True)
    key = ssh / "id_ed25519"
    shutil.copyfile(fleet.client_key, key)
    key.chmod(0o600)
    hosts = "".join(f"Host {name}\n    HostName {address}\n" for name, address in zip(NAMES, fleet.addresses))
    (ssh / "config").write_text(
        f"{hosts}Host bastion\n    HostName {fleet.addresses[0]}\n"
        "Host down1\n    HostName 127.0.0.1\n    Port 1\n"  # a host that is down: its port refuses
        f"Host *\n    User {KEY_USER}\n    Port {fleet.port}\n    IdentityFile {key}\n"
    )
    runtime = tmp_path / "runtime"  # `python -m hussh.testing up` keeps its record here, apart from other runs'
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("SSH_USER", PASSWORD_USER)
    monkeypatch.setenv("SSH_PASSWORD", PASSWORD)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # processes examples start (Ray's workers) import this checkout
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return isolated_home


PRINTS = re.compile(r"#\s*prints:\s*(.+?)\s*$", re.M)


@pytest.mark.parametrize("page", pages("python"), ids=lambda p: p.name)
def test_python_examples(page, docs_home, request):
    """Each block runs without raising, and prints what its ``# prints: ...`` comments say, in order."""
    options = page_options(page)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    if "teardown" in options:
        request.addfinalizer(lambda: exec(options["teardown"], namespace))  # our own docs
    for line, code in examples(page, "python"):
        code = own_ports(code, options)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # our own docs
        except Exception as exc:
            raise AssertionError(f"the example at {page.name}:{line} failed: {type(exc).__name__}: {exc}") from exc
        printed = [text.strip() for text in out.getvalue().splitlines()]
        for expected in PRINTS.findall(code):
            assert expected in printed, f"{page.name}:{line}: expected a line {expected!r}, printed {printed}"
            printed = printed[printed.index(expected) + 1:]


@pytest.mark.parametrize("page", pages("sh"), ids=lambda p: p.name)
def test_shell_examples(page, docs_home):
    options = page_options(page)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(REPO_ROOT))
    for line, code in examples(page, "sh"):
        if code.lstrip().startswith(("pip install", "make ", "git clone")):
            continue  # installation steps: what this checkout already did
        if "--compose" in code and not _docker_answers():
            continue  # the compose backend needs a Docker daemon (the scale suite skips likewise)
        try:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", own_ports(code, options)], env=env,
                                  capture_output=True, text=True, timeout=120)
        finally:
            if FLEET_UP.search(code):  # a block that failed before its `down` leaves no fleet behind
                subprocess.run([sys.executable, "-m", "hussh.testing", "down"], env=env, capture_output=True,
                               timeout=120)
        assert done.returncode == 0, f"{page.name}:{line} exited {done.returncode}:\n{done.stderr}"


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0 \
        if shutil.which("docker") else False


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercased, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [REPO_ROOT / "README.md", REPO_ROOT / "scale" / "README.md",
                                  *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_links_stay_inside_the_repository_and_resolve(page):
    for target in LINK.findall(page.read_text()):
        assert not target.startswith(("http://", "https://")), f"{page.name} links outside the repository: {target}"
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file(), f"{page.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.M)}
            assert anchor in headings, f"{page.name}: no heading for #{anchor} in {linked.name}"
