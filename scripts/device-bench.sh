#!/usr/bin/env bash
# The prepared benchmark for a lent GPU machine (the `device` tool; no network there, so
# nothing is built on it). Build a stripped binary here first, small enough to carry:
#
#   CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
#     cargo build --release --bin webqlora --target-dir target/device
#
# (about 14 MB; the carry limit is 64 MiB), then run this script there with carry
# ["target/device/release/webqlora"]. It needs no model
# file: `bench step` takes the SmolLM2-135M shape from data/configs/ with seeded random
# weights. Everything it prints is also written under $OUT (or ./device-bench-out).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${WEBQLORA_BIN:-target/device/release/webqlora}
out=${OUT:-device-bench-out}
mkdir -p "$out"
log() { echo "$@" | tee -a "$out/summary.txt"; }

log "== $(date -u +%FT%TZ) $(uname -srm)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/summary.txt"
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | tee -a "$out/summary.txt"
if ! "$bin" devices > "$out/devices.txt" 2>&1; then
  log "no adapter: $(tail -3 "$out/devices.txt")"
  exit 0
fi
cat "$out/devices.txt"

# Kernels at SmolLM2 shapes, 1,024 and 4,096 tokens, on the portable kernels (what this GPU
# gets by default) — one JSON object a line.
for tokens in 1024 4096; do
  timeout 240 "$bin" bench kernels --tokens "$tokens" --runs 7 --json > "$out/kernels-$tokens.jsonl" 2>> "$out/errors.txt"
  log "bench kernels --tokens $tokens: exit $?"
done

# One SmolLM2-135M QLoRA step (4 x 256, r 16 on all seven linears, checkpointing), median of
# steps 2-5, portable kernels; then the same forced onto the software kernels, to compare.
for kernels in portable software; do
  WEBQLORA_KERNELS=$kernels timeout 180 "$bin" bench step --model data/configs/smollm2-135m.json \
    --random-weights --steps 5 --json > "$out/step-$kernels.json" 2>> "$out/errors.txt"
  log "bench step ($kernels): exit $? $(cut -c 1-400 "$out/step-$kernels.json")"
done
# The portable step with the NF4 forward's tiles in f16 (opt-in; where the GPU has
# shader-f16), to see whether it pays.
WEBQLORA_F16_TILES=1 timeout 180 "$bin" bench step --model data/configs/smollm2-135m.json \
  --random-weights --steps 5 --json > "$out/step-f16-tiles.json" 2>> "$out/errors.txt"
log "bench step (f16 tiles): exit $? $(cut -c 1-400 "$out/step-f16-tiles.json")"
# A longer batch: 4,096 tokens a step.
timeout 180 "$bin" bench step --model data/configs/smollm2-135m.json --random-weights \
  --batch 16 --steps 3 --json > "$out/step-4096.json" 2>> "$out/errors.txt"
log "bench step (16 x 256): exit $? $(cut -c 1-400 "$out/step-4096.json")"
