"""Build the compose fleet's images: a local Debian base, then the sshd service image.

No registry is needed: when the base tag is missing it is made with debootstrap from the
apt mirror this machine is configured with, and imported under the public image's name.
``python -m hussh.testing image`` runs it; every step is skipped (or cached) when done.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from ._errors import FleetError

DOCKER_DIR = Path(__file__).resolve().parent / "docker"  # the build context, shipped as package data
# The Dockerfile's base, as docker-compose.yml passes it: the public tag unless overridden.
BASE_IMAGE = os.environ.get("HUSSH_BASE_IMAGE", "debian:bookworm-slim")
SERVICE_IMAGE = "hussh-testing-sshd:latest"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = Path("/etc/apt")

# Left by debootstrap, useless or harmful in the image (host keys are made at start).
ROOTFS_LEFTOVERS = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "etc/ssh/ssh_host_*",
)


def compose_command() -> list[str]:
    """Return the Compose CLI here: ``docker-compose`` (v1) or else ``docker compose`` (v2)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode == 0:
        return ["docker", "compose"]
    raise FleetError("neither docker-compose nor the docker compose plugin is installed")


def _source_entries() -> Iterator[tuple[str, list[str]]]:
    """Yield (uri, suites) for every deb source, one-line or deb822 format."""
    for path in [APT_SOURCES / "sources.list", *sorted(APT_SOURCES.glob("sources.list.d/*"))]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            yield from _deb822_entries(text)
        elif path.name == "sources.list" or path.suffix == ".list":
            yield from _one_line_entries(text)


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """Parse ``deb [options] URI SUITE COMPONENTS`` lines."""
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """Parse deb822 stanzas (``Types:``, ``URIs:``, ``Suites:``)."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(
            (key.strip().lower(), value.split())
            for key, _, value in (
                line.partition(":")
                for line in stanza.splitlines()
                if ":" in line and not line.lstrip().startswith("#")
            )
        )
        if "deb" in fields.get("types", []):
            for uri in fields.get("uris", []):
                yield uri, fields.get("suites", [])


def apt_mirror() -> str:
    """Return the configured mirror serving ``bookworm`` itself, else Debian's default."""
    for uri, suites in _source_entries():
        if SUITE in suites:
            return uri
    return DEFAULT_MIRROR


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    """Tell whether the local engine has an image under ``tag``."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _debootstrap(rootfs: Path, mirror: str) -> None:
    """Install a minimal bookworm with openssh-server into ``rootfs``."""
    if not shutil.which("debootstrap"):
        raise FleetError("debootstrap is missing: apt-get install -y debootstrap")
    command = ["debootstrap", "--variant=minbase", "--include=openssh-server", SUITE]
    result = subprocess.run([*command, str(rootfs), mirror], capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-15:] + result.stderr.splitlines()[-15:])
        raise FleetError(f"debootstrap failed ({result.returncode}):\n{tail}")


def _strip_rootfs(rootfs: Path) -> None:
    """Delete package caches and the host keys that openssh-server's install made."""
    for pattern in ROOTFS_LEFTOVERS:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _import_rootfs(rootfs: Path, tag: str) -> None:
    """Run ``tar -C rootfs -c . | docker import - tag``."""
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True
    )
    assert tar.stdout is not None  # stdout=PIPE
    tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        raise FleetError(f"importing the base image failed: {imported.stderr.strip()}")


def build_base(client: docker.DockerClient, tag: str = BASE_IMAGE) -> bool:
    """Make the base image from the apt mirror unless ``tag`` exists; tell if it built."""
    if image_exists(client, tag):
        return False
    mirror = apt_mirror()
    print(f"building {tag} with debootstrap from {mirror}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hussh-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(rootfs, mirror)
        _strip_rootfs(rootfs)
        _import_rootfs(rootfs, tag)
    return True


def build_service(client: docker.DockerClient) -> None:
    """Build the sshd service image from the package's docker/ directory (layer cache makes reruns quick)."""
    try:
        client.images.build(path=str(DOCKER_DIR), tag=SERVICE_IMAGE, buildargs={"BASE": BASE_IMAGE}, rm=True)
    except docker.errors.BuildError as error:
        lines = [str(entry.get("stream") or entry.get("error") or "").rstrip() for entry in error.build_log]
        tail = "\n".join(line for line in lines if line)[-2000:]
        raise FleetError(f"building {SERVICE_IMAGE} failed: {error.msg}\n{tail}") from error


def ensure_images(client: docker.DockerClient | None = None) -> dict[str, float]:
    """Make the base image and the service image; return seconds spent on each."""
    client = client or docker.from_env()
    timings: dict[str, float] = {}
    for step, action in (("base", lambda: build_base(client)), ("service", lambda: build_service(client))):
        started = time.monotonic()
        action()
        timings[step] = time.monotonic() - started
    return timings
