#!/usr/bin/env bash
# Prints the absolute path of a folder holding kubelet, kube-scheduler and pause, the node half of
# the test cluster (test/infra/real-node/); only the path goes to stdout, progress to stderr.
#
#   node-assets.sh            print the folder, building it first when it is not cached yet
#   node-assets.sh --check    print the folder only if it is usable right now (exit 1 otherwise)
#   node-assets.sh --help     this text
#
# Kubernetes 1.20.2 from the same Debian bookworm `kubernetes` source package that
# test/infra/envtest/assets.sh builds the control plane from (it runs first: it installs the Go
# toolchain, downloads the source and, when another process is building it, waits for that build).
# The kubelet gets two patches this machine needs (specs/kubernetes-operator.md §4.3b): no negative
# OOM score adjustments (the VM refuses any, so every pause container failed to start) and kernel
# tunables only warned about, never written (so a test cannot change the host's sysctls). `pause` is
# build/pause/linux/pause.c compiled statically. Cached, with its own key and lock, in
#   ${TRICKLE_RELAY_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trickle-relay/real-node}/<version-key>
# so the control plane's cache stays valid. The first build takes ~12-20 minutes on 2 cores.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
envtest_script="$script_dir/../envtest/assets.sh"

check_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "node-assets: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "node-assets: $*" >&2 || true; }
die() { echo "node-assets: error: $*" >&2; exit 1; }

# Bump RECIPE_REVISION whenever the build steps or patches change, so stale caches are not reused.
readonly KUBERNETES_VERSION=1.20.2
readonly RECIPE_REVISION=1
readonly VERSION_KEY="kubelet-${KUBERNETES_VERSION}-debian-bookworm-go1.19-r${RECIPE_REVISION}"
readonly GO_ROOT=/usr/lib/go-1.19
readonly REFLECT2_DEBIAN_COPY=/usr/share/gocode/src/github.com/modern-go/reflect2
readonly REQUIRED_FILES=(kubelet kube-scheduler pause)

cache_root="${TRICKLE_RELAY_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trickle-relay/real-node}"
envtest_cache="${TRICKLE_RELAY_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trickle-relay/envtest}"
assets_dir="$cache_root/$VERSION_KEY"

cached_and_complete() {
  [ -f "$assets_dir/.stamp" ] || return 1
  local file
  for file in "${REQUIRED_FILES[@]}"; do [ -x "$assets_dir/$file" ] || return 1; done
}

if cached_and_complete; then echo "$assets_dir"; exit 0; fi
if [ "$check_only" = 1 ]; then log "not cached at $assets_dir (run: bash test/infra/real-node/node-assets.sh)"; exit 1; fi
[ "${TRICKLE_RELAY_NETNS:-}" != 1 ] || die "not cached at $assets_dir, and it cannot be built inside the loopback-only network namespace; build it outside first: bash test/infra/real-node/node-assets.sh"
[ "$(id -u)" = 0 ] || die "not cached at $assets_dir; building it needs root (apt-get, like envtest/assets.sh)"

# The control plane first: the tests need it anyway, and its build leaves the toolchain installed
# and the source downloaded. If another process is building it, this waits on its lock.
bash "$envtest_script" >/dev/null || die "the control-plane build (envtest/assets.sh) failed; see above"

mkdir -p "$cache_root"
build_log="$cache_root/build.log"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
  log "another process is building the node binaries ($(cat "$cache_root/.lock-holder" 2>/dev/null || echo unknown)); waiting, progress in $build_log"
  flock -w 3600 9 || die "still locked after an hour ($cache_root/.lock)"
fi
if cached_and_complete; then echo "$assets_dir"; exit 0; fi
echo "pid $$ since $(date -u +%H:%M:%SZ)" >"$cache_root/.lock-holder"

# Survive the caller going away (like envtest/assets.sh); progress also goes to build.log.
trap '' PIPE HUP
: >"$build_log"
exec 2> >(tee -p -a "$build_log" >&2)
started_at=$(date +%s)
log "building kubelet + kube-scheduler $KUBERNETES_VERSION from Debian sources into $assets_dir (12-20 minutes on 2 cores)"

package_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
if ! package_installed libc6-dev; then
  APT_LOG_PREFIX=node-assets
  source "$script_dir/../apt-get-waiting.sh"
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get install libc6-dev (static pause binary)"
  apt_get_waiting install -y -q --no-install-recommends libc6-dev gcc >/dev/null || die "apt-get install libc6-dev failed"
fi
[ -x "$GO_ROOT/bin/go" ] || die "Go 1.19 not found at $GO_ROOT (envtest/assets.sh installs it)"
[ -d "$REFLECT2_DEBIAN_COPY" ] || die "Debian's reflect2 not found at $REFLECT2_DEBIAN_COPY (envtest/assets.sh installs it)"

# The source envtest/assets.sh downloaded (kept in its downloads folder), else download it here.
dsc_file=$(ls -1 "$envtest_cache"/downloads/kubernetes_*.dsc 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$dsc_file" ]; then
  mkdir -p "$cache_root/downloads"
  if ! compgen -G "$cache_root/downloads/kubernetes_*.dsc" >/dev/null; then
    log "apt-get source --download-only kubernetes"
    (cd "$cache_root/downloads" && apt-get source -q --download-only kubernetes >&2) \
      || die "cannot download Debian's kubernetes source (a deb-src entry for bookworm is needed; envtest/assets.sh adds one)"
  fi
  dsc_file=$(ls -1 "$cache_root"/downloads/kubernetes_*.dsc | sort -V | tail -n 1)
fi
case "$(sed -n 's/^Version: //p' "$dsc_file")" in
  *"$KUBERNETES_VERSION"*) ;;
  *) die "$(basename "$dsc_file") is not Kubernetes $KUBERNETES_VERSION; review the patches and bump KUBERNETES_VERSION/RECIPE_REVISION" ;;
esac

# Replaces exactly one line matching `pattern` in `file` with `replacement`, showing before/after;
# dies when the line is not there (a new source version needs the patch reviewed).
patch_line() {
  local file="$1" pattern="$2" replacement="$3" what="$4" count
  count=$(grep -cE "$pattern" "$file" || true)
  [ "$count" -ge 1 ] || die "$file: no line matches /$pattern/; review the patch ($what)"
  grep -nE "$pattern" "$file" | sed 's/^/node-assets:   before: /' >&2
  sed -i -E "s#$pattern#$replacement#" "$file"
  grep -n 'trickle-relay:' "$file" | sed 's/^/node-assets:   after:  /' >&2
}

unpack_and_patch() {
  rm -rf "$build_dir/src"
  log "unpacking $(basename "$dsc_file") into $build_dir"
  dpkg-source --no-check -x "$dsc_file" "$build_dir/src" >&2
  cd "$build_dir/src"

  # Go 1.19 vs the vendored reflect2 1.0.1: "fatal error: fault" in mapiternext (envtest/assets.sh fix 1).
  log "vendor fix: github.com/modern-go/reflect2 1.0.1 -> Debian's 1.0.2"
  rm -rf vendor/github.com/modern-go/reflect2
  cp -rL "$REFLECT2_DEBIAN_COPY" vendor/github.com/modern-go/reflect2
  find vendor/github.com/modern-go/reflect2 -name '*_test.go' -delete

  # This VM refuses any negative oom_score_adj (EIO), so runc cannot start a container the kubelet
  # gives one: every pause container (-998) and every Guaranteed-QoS container (-997) failed with
  # "can't get final child's PID from pipe: EOF". Burstable (>= 3) and BestEffort (1000) are kept.
  log "kubelet patch 1/3: no negative OOM score adjustments"
  patch_line pkg/kubelet/dockershim/docker_sandbox.go \
    '^([[:space:]]*defaultSandboxOOMAdj[[:space:]]+int[[:space:]]*=[[:space:]]*)-998' \
    '\10 // trickle-relay: was -998; this VM refuses negative OOM scores' "sandbox OOM score"
  patch_line pkg/kubelet/qos/policy.go \
    '^([[:space:]]*)return guaranteedOOMScoreAdj[[:space:]]*$' \
    '\1return 0 // trickle-relay: was guaranteedOOMScoreAdj (-997); this VM refuses negative OOM scores' \
    "Guaranteed/critical OOM score"

  # With --protect-kernel-defaults=true the kubelet refuses to start when kernel.panic & co. differ
  # from its wishes; without it, it rewrites them machine-wide. A warning leaves the host untouched.
  log "kubelet patch 2/3: kernel tunables that differ are only warned about"
  patch_line pkg/kubelet/cm/container_manager_linux.go \
    '^([[:space:]]*b[[:space:]]*=[[:space:]]*)KernelTunableError[[:space:]]*$' \
    '\1KernelTunableWarn // trickle-relay: was KernelTunableError; never touch, never refuse' \
    "kernel tunables"

  # The test node has no pod network (no CNI, no bridge: the machine is loopback-only), so a pod
  # with its own network namespace would hold nothing but its own `lo`, and its relay could reach
  # neither the apiserver nor the trickle server. The kubelet runs every pod like a hostNetwork one
  # (sandbox in the node's loopback-only namespace, pod IP = node IP, so probes reach it) while the
  # pod spec in the API is untouched, so admission (PodSecurityPolicy) still sees hostNetwork: false.
  log "kubelet patch 3/3: every pod shares the node's network namespace (no pod network here)"
  patch_line pkg/kubelet/container/helpers.go \
    '^([[:space:]]*)return pod\.Spec\.HostNetwork[[:space:]]*$' \
    '\1return true // trickle-relay: was pod.Spec.HostNetwork; no pod network on the test node' \
    "IsHostNetworkPod"
  patch_line pkg/kubelet/kuberuntime/helpers.go \
    '^([[:space:]]*)if pod != nil && pod\.Spec\.HostNetwork \{[[:space:]]*$' \
    '\1if pod != nil { // trickle-relay: was pod != nil \&\& pod.Spec.HostNetwork; no pod network on the test node' \
    "networkNamespaceForPod"
  touch .trickle-relay-prepared
}

build_dir="$cache_root/build-$VERSION_KEY"
mkdir -p "$build_dir"
if [ -f "$build_dir/src/.trickle-relay-prepared" ]; then
  log "resuming the build in $build_dir (source already unpacked and patched)"
  cd "$build_dir/src"
else
  unpack_and_patch
fi

export PATH="$GO_ROOT/bin:$PATH"
export GO111MODULE=off GOFLAGS="" GOPATH="$build_dir/gopath"
export KUBE_GIT_VERSION="v$KUBERNETES_VERSION" KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"

# `make` is silent for minutes: a line every 30 s (compiled Go objects so far) shows it is alive.
heartbeat() {
  local since="$1" tick=0
  while sleep 1; do
    kill -0 $$ 2>/dev/null || exit 0
    [ $((++tick % 30)) = 0 ] || continue
    log "  ... $(( $(date +%s) - since )) s so far, $(find _output/local/go/cache -name '*-d' 2>/dev/null | wc -l) Go objects compiled"
  done
}
make_started=$(date +%s)
make_log="$build_dir/make.log"
log "make WHAT='cmd/kubelet cmd/kube-scheduler' (log: $make_log)"
heartbeat "$make_started" 9>&- >/dev/null &
heartbeat_pid=$!
make_status=0
make WHAT="cmd/kubelet cmd/kube-scheduler" >"$make_log" 2>&1 || make_status=$?
kill "$heartbeat_pid" 2>/dev/null || true
wait "$heartbeat_pid" 2>/dev/null || true
if [ "$make_status" != 0 ]; then
  tail -n 40 "$make_log" >&2
  die "make failed (exit $make_status); full log in $make_log (a rerun resumes)"
fi
log "  kubelet + kube-scheduler built in $(( $(date +%s) - make_started )) s"

staging_dir="$cache_root/.staging-$VERSION_KEY"
rm -rf "$staging_dir"
mkdir -p "$staging_dir"
for bin in kubelet kube-scheduler; do
  cp "_output/local/go/bin/$bin" "$staging_dir/$bin" 2>/dev/null || cp "_output/bin/$bin" "$staging_dir/$bin"
done
# The sandbox ("pause") container's binary, from the same tree (no registry to pull it from).
gcc -Os -static -DVERSION="v3.2-trickle-relay" -o "$staging_dir/pause" build/pause/linux/pause.c \
  || die "compiling build/pause/linux/pause.c failed"
strip "$staging_dir/pause" 2>/dev/null || true
{
  echo "version-key: $VERSION_KEY"
  echo "debian-source: $(basename "$dsc_file")"
  echo "go: $("$GO_ROOT/bin/go" version)"
  echo "patches: reflect2->debian-1.0.2, no-negative-oom-score-adj, kernel-tunables-warn-only, every-pod-on-node-network"
  echo "built-at: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - started_at )) s"
} >"$staging_dir/.stamp"
rm -rf "$assets_dir"
mv "$staging_dir" "$assets_dir"
cd /
rm -rf "$build_dir" "$cache_root/.lock-holder"
log "done in $(( $(date +%s) - started_at )) s: $assets_dir"
echo "$assets_dir"
