#!/bin/bash
# Start one sshd per port in $SSHD_PORTS ("22" or "22-31"), each with its own
# ed25519 host key made on first start (kept across container restarts).
set -euo pipefail

readonly KEY_DIR=/etc/ssh/host_keys
readonly AUTHORIZED_DST=/home/hussh/.ssh/authorized_keys

# Print every port of a "FIRST" or "FIRST-LAST" range.
ports() {
    local first=${1%-*} last=${1#*-}
    seq "$first" "$last"
}

# Authorize the public keys given in $HUSSH_AUTHORIZED_KEYS (one per line), where StrictModes accepts them.
install_authorized_keys() {
    if [ -n "${HUSSH_AUTHORIZED_KEYS:-}" ]; then
        printf '%s\n' "$HUSSH_AUTHORIZED_KEYS" >"$AUTHORIZED_DST"
        chown hussh:hussh "$AUTHORIZED_DST"
        chmod 600 "$AUTHORIZED_DST"
    else
        echo "hussh-sshd: HUSSH_AUTHORIZED_KEYS is empty, key login disabled" >&2
    fi
}

# Make the host key of one port unless a previous start made it.
host_key() {
    local key="$KEY_DIR/ssh_host_ed25519_key_$1"
    [ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C "hussh-$HOSTNAME-$1" -f "$key"
    echo "$key"
}

# Run sshd in the foreground on one port.
run_sshd() {
    exec /usr/sbin/sshd -D -e -p "$1" -h "$(host_key "$1")" -o "PidFile=/run/sshd/sshd-$1.pid"
}

main() {
    install_authorized_keys
    local all
    all=$(ports "$SSHD_PORTS")
    if [ "$(wc -l <<<"$all")" -eq 1 ]; then
        run_sshd "$all"
    fi
    trap 'kill $(jobs -p) 2>/dev/null; exit 143' TERM INT
    for port in $all; do
        run_sshd "$port" &
    done
    # One sshd gone means the container is broken: stop the others with it.
    wait -n || true
    kill $(jobs -p) 2>/dev/null || true
    exit 1
}

main
