#!/usr/bin/env bash
# Measures the example pipeline's numbers quoted in README.md ("Measured"): cold and warm
# runs. The generated-JPEG benchmarks are scripts/bench.sh.
# usage: scripts/measure.sh     (needs /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."
# The pipelines below live in a temporary folder and read the shipped photos from here.
export PIPELINE_DATA_ROOTS="$PWD/data"
WORK=${WORK:-/tmp/pipeline-measure}
cargo build --release --quiet
BIN=$PWD/target/release/pipeline
mkdir -p "$WORK"

echo "== example pipeline (1800 32x32 PNGs)"
sed "s#path: ../data/cats_dogs#path: $PWD/data/cats_dogs#; s#name: cats_dogs#name: cats_dogs\ncache: cache#" \
  pipelines/cats_dogs.yaml > "$WORK/example.yaml"
rm -rf "$WORK/cache"
/usr/bin/time -f "cold, preprocessing (through validate): %e s wall, peak RSS %M KB" \
  "$BIN" run "$WORK/example.yaml" --stage validate > /dev/null
rm -rf "$WORK/cache"
/usr/bin/time -f "cold, whole pipeline: %e s wall, peak RSS %M KB" "$BIN" run "$WORK/example.yaml" > /dev/null
for i in 1 2 3; do /usr/bin/time -f "warm: %e s wall, peak RSS %M KB" "$BIN" run "$WORK/example.yaml" > /dev/null; done

# Generated JPEGs (throughput against Python + OpenCV, DVC, incremental runs, memory and
# disk at 5,000 and 25,000 images): scripts/bench.sh.
