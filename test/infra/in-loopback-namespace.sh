#!/usr/bin/env bash
# Runs a command inside a private network namespace that holds only loopback (127.0.0.1, plus
# 127.0.0.2 because aiortc ignores 127.0.0.1), so that nothing WebRTC gathers or sends can leave the
# machine. As root it uses `unshare -n`; otherwise it runs the command as is, with a warning.
#
#   in-loopback-namespace.sh CMD [ARGS...]
set -euo pipefail
if [ $# -eq 0 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if [ "${TRICKLE_RELAY_NETNS:-}" = "1" ]; then exec "$@"; fi
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  export TRICKLE_RELAY_NETNS=1
  exec unshare -n bash -c 'ip link set lo up && ip addr add 127.0.0.2/32 dev lo && exec "$@"' in-loopback-namespace "$@"
fi
echo "in-loopback-namespace: not root, so running without a private network namespace" >&2
exec "$@"
