#!/usr/bin/env bash
# GPU check for the relay's NVENC/NVDEC path: on a machine with an NVIDIA GPU, runs 1, 2, 4, …
# concurrent `trickle-relay run --encoder nvenc` sessions against the stand-in peer and prints
# sessions per GPU, the forward hop (decode + NVENC encode + pacing) and GPU memory per session
# (nvidia-smi --query-compute-apps). Writes bench-results/gpu.json and .md.
#
#   npm run bench:gpu [-- --max-sessions N --seconds S]     (builds first)
#   bash test/bench/gpu-check.sh [--max-sessions N --seconds S]
#
# NOT RUN HERE: written on a machine without a GPU, where it stops at the first check below with
# exit code 1. Nothing in bench-results/ comes from it yet.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

ffmpeg_bin="${FFMPEG_BIN:-ffmpeg}"
no_gpu() {
  echo "gpu-check: no usable NVIDIA GPU on this machine: $1" >&2
  echo "gpu-check: nothing measured. Run it where nvidia-smi lists a GPU and ffmpeg can encode with h264_nvenc." >&2
  exit 1
}
command -v nvidia-smi >/dev/null || no_gpu "nvidia-smi not found (no NVIDIA driver)"
gpus="$(nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>&1)" ||
  no_gpu "nvidia-smi failed: $(printf '%s' "$gpus" | head -n 1)"
[ -n "$gpus" ] || no_gpu "nvidia-smi lists no GPU"
# The same one-frame test encode the relay's probe runs at start.
if ! err="$("$ffmpeg_bin" -hide_banner -nostdin -loglevel error -f lavfi -i testsrc=size=256x256:rate=30 \
  -frames:v 1 -c:v h264_nvenc -preset p1 -tune ull -f null - 2>&1)"; then
  no_gpu "a one-frame h264_nvenc encode failed: $(printf '%s' "$err" | head -n 1)"
fi
echo "gpu-check: GPUs:" >&2
printf '  %s\n' "$gpus" >&2
[ -f dist/test/bench/gpu-bench.js ] || npm run -s build
exec bash test/infra/in-loopback-namespace.sh node dist/test/bench/gpu-bench.js "$@"
