#!/usr/bin/env bash
# Builds the container images from the working tree: trickle-relay/relay:VERSION (Dockerfile.relay)
# and trickle-relay/operator:VERSION (Dockerfile.operator), VERSION from package.json. Starts a
# Docker engine when none answers (test/infra/images/docker-engine.sh) and, when the base image is
# missing, builds the local stand-in for node:22-bookworm-slim (build-base-image.sh). Builds use
# `--network host` (the npm registry and Debian's archive are reachable from the host only).
# Prints each image's size at the end.
#
#   build-images.sh [--only relay|operator] [--base-image IMAGE] [--no-cache]
#
# Environment: BASE_IMAGE (default node:22-bookworm-slim), BUILD_TIMEOUT (seconds per image,
# default 1500), EXTRA_CA_CERTS (a PEM file of extra certificate authorities that npm must trust in
# the build stage; default: the locally added ones, /usr/local/share/ca-certificates/*.crt, which
# is how this machine's TLS-intercepting egress proxy is trusted; they never reach the images).
# Logs go to $TRICKLE_RELAY_CACHE/images/ (default ~/.cache/trickle-relay).
set -euo pipefail
cd "$(dirname "$0")/../../.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

only=""
base="${BASE_IMAGE:-node:22-bookworm-slim}"
cache_flag=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="${2:?--only needs relay or operator}"; shift 2 ;;
    --base-image) base="${2:?--base-image needs an image}"; shift 2 ;;
    --no-cache) cache_flag=(--no-cache); shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-images: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$only" in "" | relay | operator) ;; *) echo "build-images: --only takes relay or operator" >&2; exit 2 ;; esac

say() { echo "build-images: $*" >&2; }
die() { say "error: $*"; exit 1; }
# Debian's client matches the engine it installs; a newer client on PATH may insist on buildx.
docker_bin="$(if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else echo docker; fi)"

bash test/infra/images/docker-engine.sh start || die "no Docker engine (see above)"

version="$(node -p 'require("./package.json").version')"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
logs="${TRICKLE_RELAY_CACHE:-${HOME:-/root}/.cache/trickle-relay}/images"
mkdir -p "$logs"

if ! "$docker_bin" image inspect "$base" >/dev/null 2>&1; then
  if [ "$base" = "node:22-bookworm-slim" ]; then
    say "base image $base missing: building the local stand-in"
    bash test/infra/images/build-base-image.sh --tag "$base" || die "base image build failed"
  else
    die "base image $base is not in the engine (images cannot be pulled here)"
  fi
fi

extra_ca=""
if [ -n "${EXTRA_CA_CERTS:-}" ]; then
  extra_ca="$(cat "$EXTRA_CA_CERTS")" || die "cannot read EXTRA_CA_CERTS=$EXTRA_CA_CERTS"
elif compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  extra_ca="$(cat /usr/local/share/ca-certificates/*.crt)"
fi

build() {
  local name="$1" dockerfile="$2" tag="trickle-relay/$1:$version"
  local log="$logs/$name.log" start=$SECONDS
  say "building $tag from $dockerfile (log: $log)"
  # BuildKit (built into the 20.10 engine and client): unlike the legacy builder it does not make a
  # container, a full copy of the root filesystem on vfs, for every metadata instruction.
  if ! DOCKER_BUILDKIT=1 timeout "${BUILD_TIMEOUT:-1500}" "$docker_bin" build --progress=plain --network host "${cache_flag[@]}" \
    --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --build-arg "NPM_EXTRA_CA_CERTS=$extra_ca" \
    -f "$dockerfile" -t "$tag" . >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "building $tag failed (log: $log)"
  fi
  "$docker_bin" tag "$tag" "trickle-relay/$name:latest"
  say "built $tag in $((SECONDS - start))s"
}

[ "$only" = operator ] || build relay Dockerfile.relay
[ "$only" = relay ] || build operator Dockerfile.operator

# Dangling layers of earlier builds cost real disk on vfs (every layer is a full copy): drop
# superseded images and build cache unused for a day (this run's cache stays for the next run).
"$docker_bin" image prune -f >/dev/null 2>&1 || true
"$docker_bin" builder prune -f --filter until=24h >/dev/null 2>&1 || true
# And a cap by size: a day of CI runs each left its own cache (5.5 GB counted, 54 GB on vfs disk),
# filled the disk to 95 % and put the real node under DiskPressure. The newest cache stays.
"$docker_bin" builder prune -f --keep-storage 2gb >/dev/null 2>&1 || true

say "image sizes (uncompressed):"
for name in relay operator; do
  [ -z "$only" ] || [ "$only" = "$name" ] || continue
  "$docker_bin" image inspect --format '{{.Size}}' "trickle-relay/$name:$version" |
    awk -v t="trickle-relay/$name:$version" '{ printf "  %-32s %4.0f MB\n", t, $1 / 1e6 }' >&2
done
"$docker_bin" image inspect --format '{{.Size}}' "$base" | awk -v t="$base" '{ printf "  %-32s %4.0f MB (base)\n", t, $1 / 1e6 }' >&2
