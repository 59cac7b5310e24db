#!/usr/bin/env bash
# Makes sure a Docker engine answers on /var/run/docker.sock, starting one when none does.
#
#   docker-engine.sh start     reuse a running engine, else (root only) install Debian's docker.io
#                              when missing and start dockerd in the background; waits for it
#   docker-engine.sh status    exit 0 when an engine answers, 1 otherwise (says why)
#   docker-engine.sh stop      stop the dockerd that `start` started (never one it did not start)
#
# The engine runs with --iptables=false --bridge=none --storage-driver=vfs: this machine has no
# Docker Hub and no bridge/NAT; containers use `--network host` (builds, to reach the npm registry
# and Debian's archive), `--network none` or `--network container:ID` (tests, loopback only).
# It runs in the network namespace of the caller (the host's), never in a test namespace.
# Environment: DOCKER_START_TIMEOUT (seconds, default 60), TRICKLE_RELAY_CACHE (default
# ~/.cache/trickle-relay; the dockerd log and pid file of a started engine go to its docker/ folder).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

cache="${TRICKLE_RELAY_CACHE:-${HOME:-/root}/.cache/trickle-relay}"
state="$cache/docker"
pidfile="$state/dockerd.pid"
log="$state/dockerd.log"
timeout="${DOCKER_START_TIMEOUT:-60}"

say() { echo "docker-engine: $*" >&2; }

# The engine's own client (Debian's docker.io) when present: a newer client on PATH may want
# buildx for `docker build`; both speak the engine's API version.
docker_bin="$(if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else echo docker; fi)"

answers() { timeout 10 "$docker_bin" info >/dev/null 2>&1; }

cmd_status() {
  if ! command -v docker >/dev/null && [ ! -x /usr/bin/docker ]; then say "no docker client installed"; return 1; fi
  if answers; then say "engine answers ($("$docker_bin" version --format '{{.Server.Version}}' 2>/dev/null))"; return 0; fi
  if [ ! -S /var/run/docker.sock ]; then say "no engine: /var/run/docker.sock does not exist"; else say "no engine: /var/run/docker.sock does not answer"; fi
  return 1
}

cmd_start() {
  if answers; then say "engine already running, reusing it"; return 0; fi
  if [ "$(id -u)" != 0 ]; then say "cannot start an engine: not root"; return 1; fi
  if ! command -v dockerd >/dev/null; then
    say "installing docker.io from Debian's archive"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends docker.io; } >"$cache/apt-docker.log" 2>&1; then
      say "cannot install docker.io (log: $cache/apt-docker.log): $(tail -n 2 "$cache/apt-docker.log" | tr '\n' ' ')"
      return 1
    fi
    docker_bin=/usr/bin/docker
  fi
  mkdir -p "$state"
  if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    say "a dockerd (pid $(cat /var/run/docker.pid)) runs but does not answer; not starting a second one"
    return 1
  fi
  say "starting dockerd (log: $log)"
  # setsid: the engine outlives this script's process group (CI steps, test runners).
  setsid dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs \
    >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local waited=0
  until answers; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      say "dockerd exited at start: $(tail -n 3 "$log" | tr '\n' ' ')"
      rm -f "$pidfile"
      return 1
    fi
    if [ "$waited" -ge "$timeout" ]; then
      say "dockerd did not answer within ${timeout}s (log: $log)"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "engine up after ${waited}s"
}

cmd_stop() {
  if [ ! -f "$pidfile" ]; then say "no dockerd started by this script"; return 0; fi
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/comm" 2>/dev/null; then
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do sleep 1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then say "dockerd still running after 30s; sending SIGKILL"; kill -KILL "$pid"; fi
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start) mkdir -p "$cache"; cmd_start ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
