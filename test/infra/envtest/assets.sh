#!/usr/bin/env bash
# Prints the absolute path of a folder holding kube-apiserver, kube-controller-manager, etcd and
# kubectl for the envtest-style test control plane (only the path goes to stdout; progress to stderr).
#
#   assets.sh            print the folder, building it first when it is not cached yet
#   assets.sh --check    print the folder only if it is usable right now (exit 1 otherwise, no build)
#   assets.sh --help     this text
#
# KUBEBUILDER_ASSETS, when set and holding the three binaries, wins. Otherwise Kubernetes 1.20.2 is
# built from Debian bookworm's `kubernetes` *source* package (Debian ships no kube-apiserver binary
# and no other source is reachable), with two small Go-1.19 fixes to vendored code, and cached in
#   ${TRICKLE_RELAY_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trickle-relay/envtest}/<version-key>
# The first build needs root (apt-get) and takes ~5-8 minutes on 2 cores; later calls take a moment.
# One build at a time per cache (a lock; others wait and then use it). A build keeps going when
# its caller goes away, and its progress is also written to build.log in the cache folder.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

check_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "envtest-assets: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "envtest-assets: $*" >&2 || true; }
die() { echo "envtest-assets: error: $*" >&2; exit 1; }

# Bump RECIPE_REVISION whenever the build steps or patches change, so stale caches are not reused.
readonly KUBERNETES_VERSION=1.20.2
readonly RECIPE_REVISION=1
readonly VERSION_KEY="kubernetes-${KUBERNETES_VERSION}-debian-bookworm-go1.19-r${RECIPE_REVISION}"
readonly GO_ROOT=/usr/lib/go-1.19
readonly REFLECT2_DEBIAN_COPY=/usr/share/gocode/src/github.com/modern-go/reflect2
readonly BUILD_PACKAGES=(golang-go jq rsync etcd-server golang-github-modern-go-reflect2-dev dpkg-dev)
readonly REQUIRED_BINARIES=(kube-apiserver kube-controller-manager etcd)

cache_root="${TRICKLE_RELAY_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trickle-relay/envtest}"
assets_dir="$cache_root/$VERSION_KEY"

holds_binaries() {
  local dir="$1" bin
  for bin in "${REQUIRED_BINARIES[@]}"; do [ -x "$dir/$bin" ] || return 1; done
}

# 1. An explicit KUBEBUILDER_ASSETS (setup-envtest style) takes precedence.
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  if holds_binaries "$KUBEBUILDER_ASSETS"; then
    (cd "$KUBEBUILDER_ASSETS" && pwd -P)
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of: ${REQUIRED_BINARIES[*]}; using the cached Debian-source build instead"
fi

cached_and_complete() { [ -f "$assets_dir/.stamp" ] && holds_binaries "$assets_dir"; }

# 2. The cache (fast path, no lock needed: the folder only appears once complete).
if cached_and_complete; then echo "$assets_dir"; exit 0; fi
if [ "$check_only" = 1 ]; then log "not cached at $assets_dir (run: npm run -s envtest:assets)"; exit 1; fi
# The loopback-only test namespace cannot reach Debian's archive (apt-get: "Temporary failure
# resolving"), so the build must run before entering it.
if [ "${TRICKLE_RELAY_NETNS:-}" = 1 ]; then
  die "not cached at $assets_dir, and it cannot be built inside the loopback-only network namespace (no route to Debian's archive); build it outside first: npm run -s envtest:assets"
fi

# 3. Build. Without root we can neither add the deb-src entry nor install the toolchain.
package_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# True when some apt source (deb822 stanza or one-line entry) provides deb-src for bookworm.
deb_src_configured() {
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk '
      function check() { if (types ~ /(^| )deb-src( |$)/ && suites ~ /(^| )bookworm( |$)/) found = 1; types = suites = "" }
      /^[[:space:]]*$/ { check(); next }
      /^Types:/ { $1 = ""; types = $0 } /^Suites:/ { $1 = ""; suites = $0 }
      END { check(); exit found ? 0 : 1 }' "$file" && return 0
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -E 's/\[[^]]*\]//' | awk '$1 == "deb-src" && $3 == "bookworm" { found = 1 } END { exit found ? 0 : 1 }'
}

if [ "$(id -u)" != 0 ]; then
  missing=()
  for pkg in "${BUILD_PACKAGES[@]}"; do package_installed "$pkg" || missing+=("$pkg"); done
  source_known=0
  if compgen -G "$cache_root/downloads/kubernetes_*.dsc" >/dev/null \
    || apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then source_known=1; fi
  if [ ${#missing[@]} -gt 0 ] || [ "$source_known" = 0 ]; then
    die "the test control plane is not cached at $assets_dir and building it needs root.
  Either point KUBEBUILDER_ASSETS at a folder with ${REQUIRED_BINARIES[*]},
  or run this script once as root (it adds a deb-src entry for Debian bookworm and runs
  apt-get update && apt-get install -y --no-install-recommends ${BUILD_PACKAGES[*]}),
  or do that yourself and rerun it.${missing[*]:+
  Missing packages: ${missing[*]}}$([ "$source_known" = 1 ] || printf '\n  apt knows no kubernetes source package (no deb-src entry for bookworm, or apt-get update not run).')"
  fi
fi

mkdir -p "$cache_root"
build_log="$cache_root/build.log"
# Two concurrent callers (CI jobs sharing a cache, two terminals) must not build twice: the second
# waits here and then finds the finished cache. Only the lock holder touches the build folder.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
  readonly MAX_LOCK_WAIT_S=3600
  wait_started=$SECONDS
  holder=$(cat "$cache_root/.lock-holder" 2>/dev/null || true)
  log "another process is building the assets (${holder:-unknown}); waiting for it, progress in $build_log"
  until flock -w 30 9; do
    [ $((SECONDS - wait_started)) -lt $MAX_LOCK_WAIT_S ] \
      || die "still locked after $MAX_LOCK_WAIT_S s by ${holder:-an unknown process} ($cache_root/.lock); see $build_log"
    log "  still waiting ($((SECONDS - wait_started)) s); last progress: $(tail -n 1 "$build_log" 2>/dev/null | sed 's/^envtest-assets: *//')"
  done
fi
if cached_and_complete; then echo "$assets_dir"; exit 0; fi
echo "pid $$ since $(date -u +%H:%M:%SZ)" >"$cache_root/.lock-holder"

# From here on the build must survive its caller: a test runner that times out or a closed
# terminal used to kill it at its next progress line (SIGPIPE/SIGHUP), leaving the next caller to
# start over. Progress goes to the terminal and to build.log; tee -p keeps writing the file when
# the terminal's pipe is gone. Ctrl-C (SIGINT) still stops it.
trap '' PIPE HUP
: >"$build_log"
exec 2> >(tee -p -a "$build_log" >&2)

started_at=$(date +%s)
log "building Kubernetes $KUBERNETES_VERSION control-plane binaries from Debian sources into $assets_dir (5-8 minutes on 2 idle cores, longer on a busy machine)"

# 3a. deb-src for the same bookworm archive the system already uses.
add_deb_src_entry() {
  deb_src_configured && return 0
  local uri="" keyring=""
  # deb822 (.sources) stanzas: take the URIs/Signed-By of the stanza whose Suites has plain bookworm.
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    read -r uri keyring < <(awk '
      function flush() { if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ && uri == "") { uri = u; key = k } u = k = types = suites = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { u = $2 } /^Signed-By:/ { k = $2 } /^Types:/ { $1 = ""; types = $0 } /^Suites:/ { $1 = ""; suites = $0 }
      END { flush(); if (uri != "") print uri, key }' "$file") || true
    [ -n "$uri" ] && break
  done
  # One-line format: deb [options] URI bookworm components...
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -E 's/\[[^]]*\]//' | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }') || true
  fi
  [ -n "$uri" ] || die "no Debian bookworm entry found in /etc/apt/sources.list(.d) to derive a deb-src entry from"
  log "adding a deb-src entry for $uri bookworm (/etc/apt/sources.list.d/trickle-relay-deb-src.sources)"
  {
    echo "# Added by trickle-relay test/infra/envtest/assets.sh: source packages to build kube-apiserver."
    echo "Types: deb-src"
    echo "URIs: $uri"
    echo "Suites: bookworm"
    echo "Components: main"
    [ -n "$keyring" ] && echo "Signed-By: $keyring"
  } >/etc/apt/sources.list.d/trickle-relay-deb-src.sources
}

if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  APT_LOG_PREFIX=envtest-assets
  source "$script_dir/../apt-get-waiting.sh"
  add_deb_src_entry
  log "apt-get update"
  apt_get_waiting update -q >/dev/null || die "apt-get update failed (is Debian's archive reachable? inside a network namespace it is not)"
  log "apt-get install ${BUILD_PACKAGES[*]}"
  apt_get_waiting install -y -q --no-install-recommends "${BUILD_PACKAGES[@]}" >/dev/null \
    || die "apt-get install ${BUILD_PACKAGES[*]} failed"
fi
[ -x "$GO_ROOT/bin/go" ] || die "Go 1.19 not found at $GO_ROOT (package golang-1.19-go, pulled in by golang-go)"
[ -d "$REFLECT2_DEBIAN_COPY" ] || die "Debian's reflect2 copy not found at $REFLECT2_DEBIAN_COPY (package golang-github-modern-go-reflect2-dev)"

# 3b. Source: the downloaded .dsc/.orig/.debian files are kept so that a failed build can be retried
# without downloading 34 MB again; the unpacked tree is thrown away after a successful build.
downloads_dir="$cache_root/downloads"
mkdir -p "$downloads_dir"
if ! compgen -G "$downloads_dir/kubernetes_*.dsc" >/dev/null; then
  log "apt-get source --download-only kubernetes"
  (cd "$downloads_dir" && apt-get source -q --download-only kubernetes >&2)
fi
dsc_file=$(ls -1 "$downloads_dir"/kubernetes_*.dsc | sort -V | tail -n 1)
debian_source_version=$(sed -n 's/^Version: //p' "$dsc_file")
case "$debian_source_version" in
  *"$KUBERNETES_VERSION"*) ;;
  *) die "Debian's kubernetes source is version $debian_source_version, not $KUBERNETES_VERSION; the vendor fixes below were made for $KUBERNETES_VERSION — review them and bump KUBERNETES_VERSION/RECIPE_REVISION" ;;
esac

# 3c. Unpack, then apply the Go-1.19 fixes to vendored code of the 1.20 era (see specs §4.3).
unpack_and_patch() {
  rm -rf "$build_dir/src"
  log "unpacking $(basename "$dsc_file") (with Debian's patches) into $build_dir"
  dpkg-source --no-check -x "$dsc_file" "$build_dir/src" >&2
  cd "$build_dir/src"

  # Fix 1: reflect2 v1.0.1 reads Go's map internals with a layout that changed in Go 1.18; with
  # Go 1.19 the apiserver dies with "fatal error: fault" in mapiternext the first time a custom
  # resource is written. Debian's reflect2 1.0.2 (same API, made for Go >= 1.18) replaces it.
  log "vendor fix 1/2: github.com/modern-go/reflect2 1.0.1 -> Debian's 1.0.2"
  rm -rf vendor/github.com/modern-go/reflect2
  cp -rL "$REFLECT2_DEBIAN_COPY" vendor/github.com/modern-go/reflect2
  find vendor/github.com/modern-go/reflect2 -name '*_test.go' -delete

  # Fix 2: kube-openapi's type validator treats a value as "null" when it equals reflect.Zero of
  # its type *by pointer*; under Go 1.19 every empty string shares the zero buffer, so `message: ""`
  # in a typed CR field was rejected with 422. Only a real nil is null.
  type_go=vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go
  log "vendor fix 2/2: $type_go null check -> data == nil"
  zero_check_line=$(grep -n 'reflect.Zero' "$type_go" | head -n 1 | cut -d: -f1)
  [ -n "$zero_check_line" ] || die "$type_go no longer contains the reflect.Zero null check; review fix 2"
  sed -n "${zero_check_line}p" "$type_go" | sed 's/^/envtest-assets:   before: /' >&2
  sed -i -E "${zero_check_line}s/if .*\{[[:space:]]*\$/if data == nil { \/\/ trickle-relay: was a reflect.Zero pointer comparison, wrong under Go 1.19/" "$type_go"
  sed -n "${zero_check_line}p" "$type_go" | sed 's/^/envtest-assets:   after:  /' >&2
  grep -q 'if data == nil { // trickle-relay' "$type_go" || die "could not patch $type_go; review fix 2"
  touch .trickle-relay-prepared
}

# A build folder left by a build that died is resumed, not wiped: its patched tree and Go cache
# make the retry incremental. (Only the lock holder gets here, so no other build is using it.)
build_dir="$cache_root/build-$VERSION_KEY"
mkdir -p "$build_dir"
if [ -f "$build_dir/src/.trickle-relay-prepared" ]; then
  log "resuming the build in $build_dir (its source tree is unpacked and patched already)"
  cd "$build_dir/src"
else
  unpack_and_patch
fi

# 3d. Build like debian/rules does: the Makefile in GOPATH mode with Debian's Go, two cores.
export PATH="$GO_ROOT/bin:$PATH"
export GO111MODULE=off GOFLAGS="" GOCACHE="$build_dir/gocache" GOPATH="$build_dir/gopath"
export KUBE_GIT_VERSION="v$KUBERNETES_VERSION" KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
# `make` is silent for minutes: a line every 30 s shows it is alive (the count of compiled Go
# objects in the Go cache, which hack/lib/golang.sh puts under _output, only grows). The heartbeat drops the lock fd, ends with this script, and ticks every
# second so that no sleep outlives it holding the caller's pipes open.
heartbeat() {
  local what="$1" since="$2" tick=0
  while sleep 1; do
    kill -0 $$ 2>/dev/null || exit 0
    [ $((++tick % 30)) = 0 ] || continue
    log "  ... $what: $(( $(date +%s) - since )) s so far, $(find _output/local/go/cache -name '*-d' 2>/dev/null | wc -l) Go objects compiled in all"
  done
}
for what in cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl; do
  step_started=$(date +%s)
  make_log="$build_dir/make-$(basename "$what").log"
  log "make WHAT=$what (log: $make_log)"
  heartbeat "$what" "$step_started" 9>&- >/dev/null &
  heartbeat_pid=$!
  make_status=0
  make WHAT="$what" >"$make_log" 2>&1 || make_status=$?
  kill "$heartbeat_pid" 2>/dev/null || true
  wait "$heartbeat_pid" 2>/dev/null || true
  if [ "$make_status" != 0 ]; then
    tail -n 40 "$make_log" >&2
    die "make WHAT=$what failed (exit $make_status); full log in $make_log"
  fi
  log "  $what built in $(( $(date +%s) - step_started )) s"
done

# 3e. Install atomically: a half-copied folder must never look like a cache hit.
staging_dir="$cache_root/.staging-$VERSION_KEY"
rm -rf "$staging_dir"
mkdir -p "$staging_dir"
for bin in kube-apiserver kube-controller-manager kubectl; do
  cp "_output/local/go/bin/$bin" "$staging_dir/$bin" 2>/dev/null || cp "_output/bin/$bin" "$staging_dir/$bin"
done
cp /usr/bin/etcd "$staging_dir/etcd"
{
  echo "version-key: $VERSION_KEY"
  echo "debian-source: kubernetes $debian_source_version"
  echo "go: $("$GO_ROOT/bin/go" version)"
  echo "etcd: $(dpkg-query -W -f='${Version}' etcd-server)"
  echo "vendor-fixes: reflect2->debian-1.0.2, kube-openapi-validate-type-nil-check"
  echo "built-at: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - started_at )) s"
} >"$staging_dir/.stamp"
rm -rf "$assets_dir"
mv "$staging_dir" "$assets_dir"
cd /
rm -rf "$build_dir" "$cache_root/.lock-holder"
log "done in $(( $(date +%s) - started_at )) s: $assets_dir"
echo "$assets_dir"
