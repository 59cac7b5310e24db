#!/usr/bin/env bash
# Runs the test suite (compiled to dist/ by `npm run build`) with the project's Node 22.
#
#   run-tests.sh                 every dist/test/**/*.test.js
#   run-tests.sh FILE...         only those compiled test files
#
# When the chosen files need a kube-apiserver, its binaries are checked first and, on first use,
# built before any test starts (test/infra/envtest/assets.sh: ~5-8 min once, progress shown), so
# that no test's timeout includes a one-off install. WebRTC gathers ICE candidates on every
# interface, and tests must only ever touch loopback. So as root the suite re-executes itself
# inside a private network namespace that holds nothing but `lo`, with 127.0.0.2 added (aiortc
# ignores 127.0.0.1). TRICKLE_RELAY_NETNS=1 marks that namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

# The `node` devDependency first on PATH, as under `npm run`: a system Node 20 crashes in undici.
if [ -x node_modules/.bin/node ]; then PATH="$PWD/node_modules/.bin:$PATH"; fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo none)
if [ "$node_major" != 22 ]; then
  echo "run-tests: needs Node 22, found $(node --version 2>/dev/null || echo 'no node'); run \`npm ci\` (it installs Node 22 as the \`node\` devDependency)" >&2
  exit 1
fi

# True when running everything, or when a chosen file starts a control plane. A folder or glob
# counts as yes.
needs_envtest() {
  local arg
  [ $# -eq 0 ] && return 0
  for arg; do
    case "$arg" in -*) continue ;; esac
    [ -f "$arg" ] || return 0
    grep -qE 'resolveEnvtestAssets|startControlPlane' "$arg" && return 0
  done
  return 1
}

# Outside the namespace, because the first build needs apt-get and Debian's archive.
ensure_envtest_assets() {
  local started=$SECONDS
  bash test/infra/envtest/assets.sh --check >/dev/null 2>&1 && return 0
  echo "run-tests: the Kubernetes tests need kube-apiserver, kube-controller-manager and etcd, which are not built yet; building them now, before any test starts" >&2
  if bash test/infra/envtest/assets.sh >/dev/null; then
    echo "run-tests: envtest assets ready after $((SECONDS - started)) s; starting the tests" >&2
  elif [ "$(id -u)" = 0 ]; then
    echo "run-tests: error: building the envtest assets failed (see above), so no test was run." >&2
    echo "  Fix the cause and rerun (a rerun resumes the build), or run only test files that need no" >&2
    echo "  kube-apiserver: bash test/infra/run-tests.sh dist/test/<path>.test.js" >&2
    exit 1
  else
    echo "run-tests: no envtest assets without root (see above); the Kubernetes tests will be skipped" >&2
  fi
}

# True when running everything, or when a chosen file may start the real test node.
needs_real_node() {
  local arg
  [ $# -eq 0 ] && return 0
  for arg; do
    case "$arg" in -*) continue ;; esac
    [ -f "$arg" ] || return 0
    grep -qE 'realNodeAvailability|chooseNode' "$arg" && return 0
  done
  return 1
}

# The real test node's kubelet and scheduler (test/infra/real-node/node-assets.sh, ~12-20 min once),
# built only where the node can run: as root, with the Docker engine that holds the images. Where
# the build fails the suites fall back to the local harness and say why; the tests still run.
ensure_node_assets() {
  local started=$SECONDS
  bash test/infra/real-node/node-assets.sh --check >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || return 0
  if ! command -v dockerd >/dev/null || ! bash test/infra/images/docker-engine.sh status >/dev/null 2>&1; then
    echo "run-tests: no Docker engine answers, so the real test node is not built; its suites use the local harness" >&2
    return 0
  fi
  echo "run-tests: building the real test node (kubelet + kube-scheduler 1.20.2) before any test starts" >&2
  if bash test/infra/real-node/node-assets.sh >/dev/null; then
    echo "run-tests: real test node binaries ready after $((SECONDS - started)) s" >&2
  else
    echo "run-tests: building the real test node failed (see above); its suites fall back to the local harness" >&2
  fi
}

if [ "${TRICKLE_RELAY_NETNS:-}" != "1" ]; then
  if needs_envtest "$@"; then ensure_envtest_assets; fi
  if needs_real_node "$@"; then ensure_node_assets; fi
  if [ "$(id -u)" = 0 ]; then exec bash test/infra/in-loopback-namespace.sh bash test/infra/run-tests.sh "$@"; fi
  echo "run-tests: not root, so no private network namespace; WebRTC tests will be skipped" >&2
fi

if [ $# -eq 0 ]; then set -- "dist/test/**/*.test.js"; fi
# --test-force-exit: a file whose tests are done must not hang the run on a leaked handle;
# --test-timeout: no single test may run away (CI has a hard time limit).
exec node --test --test-reporter=spec --test-force-exit --test-timeout=300000 "$@"
