"""``make_spec``: a host name and its ``ConnectOptions`` become a ``ConnectSpec``, resolved once in the caller.

Resolution follows ``ssh``'s precedence: an option given beats the ssh config, which beats
hussh's defaults. Workers receive finished specs (with host keys pre-matched: ``finalized``) and
never read config or known_hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from ._config import ConfigResolver, HostConfig
from ._known_hosts import lookup
from ._options import ConnectOptions
from ._spec import (
    DEFAULT_KEEPALIVE_COUNT_MAX,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_KEY_FILES,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_STALL_TIMEOUT,
    MAX_JUMPS,
    ConnectSpec,
    HostKeyChecking,
)
from .errors import ConfigError

NO_OPTIONS = ConnectOptions()


def make_spec(host: str, options: ConnectOptions = NO_OPTIONS, resolver: ConfigResolver | None = None) -> ConnectSpec:
    """``host`` reached as ``options`` say, the ssh config (``resolver``'s, else ``options.ssh_config``'s)
    filling what they do not."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, got {host!r}")
    if resolver is None:
        resolver = ConfigResolver(options.ssh_config)
    key = os.fspath(options.private_key) if options.private_key is not None else None
    known_hosts = os.fspath(options.known_hosts) if options.known_hosts is not None else None
    password, proxy_jump = options.password, options.proxy_jump
    config = resolver.resolve(host, options.username, options.port)
    checking = options.host_key_checking or _checking_from(config.strict_host_key_checking)
    known = (os.path.expanduser(known_hosts),) if known_hosts is not None else _known_hosts_from(config)
    connect_timeout = options.connect_timeout or 0.0
    hops = (resolver, known_hosts, options.host_key_checking, connect_timeout)
    if isinstance(proxy_jump, ConnectSpec):
        jump: ConnectSpec | None = proxy_jump
    else:
        chain = config.proxy_jump if proxy_jump is None else str(proxy_jump)  # ConnectOptions keeps a str or a spec
        jump = _chain(chain, *hops, depth=1)
    hostname = config.hostname or host
    port = options.port or config.port or 22
    username = options.username or config.user or "root"
    proxy_command = options.proxy_command
    if proxy_command:
        proxy_command = _expand_tokens(proxy_command, hostname, port, username, host)
    elif proxy_jump is None and config.proxy_jump is None:
        proxy_command = config.proxy_command  # expanded by the config; a ProxyJump takes its place, as in ssh
    return ConnectSpec(
        host=host,
        hostname=hostname,
        port=port,
        username=username,
        password=password,
        private_key=os.path.expanduser(key) if key is not None else None,
        identities=() if key is not None or password is not None else _identities_from(config),
        identities_only=bool(config.identities_only),
        certificates=tuple(os.path.expanduser(path) for path in config.certificate_files or ()),
        agent=None if key is not None or password is not None else _agent_from(config),
        forward_agent=bool(options.forward_agent if options.forward_agent is not None else config.forward_agent),
        timeout=float(options.timeout or 0),
        connect_timeout=float(connect_timeout or config.connect_timeout or 0),
        keepalive_interval=_keepalive_interval(options.keepalive_interval, config),
        keepalive_count_max=DEFAULT_KEEPALIVE_COUNT_MAX if config.server_alive_count_max is None
        else config.server_alive_count_max,
        known_hosts=known,
        host_key_checking=checking,
        hash_known_hosts=bool(config.hash_known_hosts),
        max_output=options.max_output or DEFAULT_MAX_OUTPUT,
        jump=jump,
        proxy_command=proxy_command or "",
        stall_timeout=float(DEFAULT_STALL_TIMEOUT if options.stall_timeout is None else options.stall_timeout),
    )


def _keepalive_interval(given: float | None, config: HostConfig) -> float:
    """The option if given (0: off), else the config's ``ServerAliveInterval`` (0: off), else the default."""
    if given is not None:
        return float(given)
    if config.server_alive_interval is not None:
        return config.server_alive_interval
    return DEFAULT_KEEPALIVE_INTERVAL
def _expand_tokens(command: str, hostname: str, port: int, username: str, alias: str) -> str:
    """``ssh``'s ``%h %p %r %n %%`` in a ``proxy_command=`` argument (the config expands its own)."""
    tokens = {"h": hostname, "p": str(port), "r": username, "n": alias, "%": "%"}
    out, chars = [], iter(command)
    for char in chars:
        out.append(tokens.get(next(chars, ""), "") if char == "%" else char)
    return "".join(out)


def _checking_from(value: str | None) -> HostKeyChecking:
    """``StrictHostKeyChecking`` in hussh's terms (``ask`` is ``strict``: nobody answers prompts in a batch)."""
    if value in ("yes", "ask"):
        return "strict"
    if value in ("no", "off"):
        return "off"
    return "accept-new"


def _known_hosts_from(config: HostConfig) -> tuple[str, ...]:
    user = config.user_known_hosts_files
    if user is None:
        user = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
    system = config.global_known_hosts_files
    if system is None:
        system = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    return tuple(os.path.expanduser(path) for path in (*user, *system))


def _identities_from(config: HostConfig) -> tuple[str, ...]:
    """Config ``IdentityFile``s, else the default ``~/.ssh/id_*`` files that exist now."""
    if config.identity_files:
        return tuple(os.path.expanduser(path) for path in config.identity_files)
    ssh_dir = Path("~/.ssh").expanduser()
    return tuple(str(ssh_dir / name) for name in DEFAULT_KEY_FILES if (ssh_dir / name).is_file())


def _agent_from(config: HostConfig) -> str | None:
    """The agent socket: config ``IdentityAgent`` (``none`` turns it off), else ``SSH_AUTH_SOCK``."""
    value = config.identity_agent
    if value == "none":
        return None
    if value is None or value == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK") or None
    return os.path.expanduser(value)


def _chain(chain: str | None, resolver: ConfigResolver, known_hosts: str | None, checking: HostKeyChecking | None,
           connect_timeout: float, depth: int) -> ConnectSpec | None:
    """The last hop of a ``ProxyJump`` chain, each hop resolved through the config like ``ssh -J``.

    A hop is reached through the hops before it; only the first hop's own config ``ProxyJump``
    applies. Credentials given to hussh are the target's: hops log in with what their config
    (or the agent and default keys) provides, as with ``ssh -J``.
    """
    if chain is None or chain.strip().lower() in ("", "none"):
        return None
    if depth > MAX_JUMPS:
        raise ConfigError(f"ProxyJump chain longer than {MAX_JUMPS} hops (a loop in the ssh config?)")
    cache_key = (chain, str(known_hosts), checking, connect_timeout, depth)
    if cache_key in resolver.jumps:  # 10,000 hosts behind one bastion resolve it once
        return resolver.jumps[cache_key]  # type: ignore[return-value]
    from .hostlist import parse_target  # noqa: PLC0415 - hostlist imports nothing of ours; keeps start-up lean

    previous: ConnectSpec | None = None
    for number, text in enumerate(part.strip() for part in chain.split(",")):
        if text.startswith("ssh://"):
            text = text[len("ssh://"):]
        try:
            target = parse_target(text)
        except ValueError as exc:
            raise ConfigError(f"bad ProxyJump hop {text!r}: {exc}") from None
        own_jump: str | ConnectSpec | None = previous if number else None
        hop_config = resolver.resolve(target.host, target.user, target.port)
        if number == 0:
            own_jump = _chain(hop_config.proxy_jump, resolver, known_hosts, checking, connect_timeout, depth + 1)
        hop = ConnectOptions(port=target.port, username=target.user, connect_timeout=connect_timeout or None,
                             known_hosts=known_hosts, host_key_checking=checking, proxy_jump=own_jump or "none")
        previous = make_spec(target.host, hop, resolver)
    resolver.jumps[cache_key] = previous
    return previous


def finalized(spec: ConnectSpec) -> ConnectSpec:
    """``spec`` (and its hops) ready to ship to a worker: the known_hosts entries that apply and
    the connect bound filled in here, so the worker depends on no file and no setting of ours."""
    return msgspec.structs.replace(
        spec,
        host_keys=spec.host_keys if spec.host_keys is not None else lookup(spec),
        connect_timeout=spec.connect_bound,
        jump=finalized(spec.jump) if spec.jump is not None else None,
    )
