#!/usr/bin/env bash
# Runs the test suite (compiled to dist/ by `npm run build`).
#
#   run-tests.sh                 every dist/test/**/*.test.js
#   run-tests.sh FILE...         only those compiled test files
#
# WebRTC gathers ICE candidates on every interface, and tests must only ever touch loopback. So as
# root the suite re-executes itself inside a private network namespace that holds nothing but `lo`,
# with 127.0.0.2 added (aiortc ignores 127.0.0.1). TRICKLE_RELAY_NETNS=1 marks that namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

if [ "${TRICKLE_RELAY_NETNS:-}" != "1" ]; then
  if [ "$(id -u)" = 0 ]; then exec bash test/infra/in-loopback-namespace.sh bash test/infra/run-tests.sh "$@"; fi
  echo "run-tests: not root, so no private network namespace; WebRTC tests will be skipped" >&2
fi

if [ $# -eq 0 ]; then set -- "dist/test/**/*.test.js"; fi
# --test-force-exit: a file whose tests are done must not hang the run on a leaked handle;
# --test-timeout: no single test may run away (CI has a hard time limit).
exec node --test --test-reporter=spec --test-force-exit --test-timeout=300000 "$@"
