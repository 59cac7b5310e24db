#!/usr/bin/env bash
# Installs the Debian packages that the demo and the tests use, when they are missing.
# As root it installs them with apt-get; otherwise it names what is missing and how to get it.
#
#   setup-system.sh                 everything the test suite needs, and the real ComfyStream test
#                                   peer when it is beside the checkout (../shared/peers/comfystream)
#   setup-system.sh --only ffmpeg   just ffmpeg (what the demo needs)
#   setup-system.sh --only chromium just Debian's chromium (the session pages' browser tests)
#
# When another apt/dpkg process holds the package lock it waits for it (up to
# TRICKLE_RELAY_APT_LOCK_TIMEOUT seconds, default 900) instead of failing.
set -euo pipefail

usage() {  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="${2:?--only needs a group name}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup-system: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# package name -> a check that passes when it is usable
declare -A checks=(
  [ffmpeg]="command -v ffmpeg && command -v ffprobe"
  [python3-aiortc]="/usr/bin/python3 -c 'import aiortc'"
  [python3-av]="/usr/bin/python3 -c 'import av'"
  [python3-aiohttp]="/usr/bin/python3 -c 'import aiohttp'"
  [python3-numpy]="/usr/bin/python3 -c 'import numpy'"
  [iproute2]="command -v ip"
  [util-linux]="command -v unshare"
  [lua5.1]="command -v lua5.1"
  [chromium]="command -v chromium"
  [prometheus]="command -v promtool"
)
groups_ffmpeg=(ffmpeg)
groups_chromium=(chromium)
groups_all=(ffmpeg python3-aiortc python3-av python3-aiohttp python3-numpy iproute2 util-linux lua5.1 chromium prometheus)

if [ "$only" = "ffmpeg" ]; then wanted=("${groups_ffmpeg[@]}");
elif [ "$only" = "chromium" ]; then wanted=("${groups_chromium[@]}");
elif [ -z "$only" ]; then wanted=("${groups_all[@]}");
else echo "setup-system: unknown group '$only' (known: ffmpeg, chromium)" >&2; exit 2; fi

# The real ComfyStream server as a test peer: its own run.sh installs its Debian packages (~50, about
# 3 min the first time) and unpacks its sources. Optional: where it is absent or cannot be set up, its
# suite (test/session/real-comfystream.test.ts) is skipped and says why.
setup_real_comfystream() {
  local peer="${COMFYSTREAM_PEER_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/../shared/peers/comfystream}"
  [ -f "$peer/run.sh" ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "setup-system: not root, so the real ComfyStream test peer is not set up (its tests will be skipped)" >&2
    return 0
  fi
  echo "setup-system: setting up the real ComfyStream test peer ($peer)" >&2
  COMFYSTREAM_PEER_SETUP_ONLY=1 bash "$peer/run.sh" >/dev/null ||
    echo "setup-system: the real ComfyStream test peer could not be set up (its tests will be skipped)" >&2
}
finish() {
  if [ -z "$only" ]; then setup_real_comfystream; fi
  exit 0
}

missing=()
for pkg in "${wanted[@]}"; do
  if ! bash -c "${checks[$pkg]}" >/dev/null 2>&1; then missing+=("$pkg"); fi
done
[ ${#missing[@]} -eq 0 ] && finish

# An explicit ffmpeg binary makes the Debian package unnecessary.
if [ -n "${FFMPEG_BIN:-}" ] && [ -x "${FFMPEG_BIN}" ]; then
  missing=("${missing[@]/ffmpeg}")
  read -r -a missing <<<"${missing[*]}"  [ ${#missing[@]} -eq 0 ] && finish
fi

if [ "$(id -u)" != 0 ]; then
  echo "setup-system: missing Debian packages: ${missing[*]}" >&2
  echo "  install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "setup-system: installing ${missing[*]} from Debian's archive" >&2
export DEBIAN_FRONTEND=noninteractive
APT_LOG_PREFIX=setup-system
source "$(dirname "$0")/apt-get-waiting.sh"
apt_get_waiting update -q >/dev/null
apt_get_waiting install -y -q --no-install-recommends "${missing[@]}" >/dev/null
finish
