#!/usr/bin/env bash
# Measures the numbers quoted in README.md ("Measured"): cold and warm runs of the example
# pipeline, and peak RSS for N generated 500x375 JPEGs resized to 224x224 (default 5000;
# a 1000-image subset shows memory does not grow with the dataset).
# usage: scripts/measure.sh [N]     (needs /usr/bin/time; installs pillow+numpy with pip)
set -euo pipefail
cd "$(dirname "$0")/.."
# The pipelines below live in a temporary folder and read the shipped photos from here.
export PIPELINE_DATA_ROOTS="$PWD/data"
N=${1:-5000}
WORK=${WORK:-/tmp/pipeline-measure}
python3 -m pip install --quiet --disable-pip-version-check pillow numpy
cargo build --release --quiet
BIN=$PWD/target/release/pipeline
mkdir -p "$WORK"

echo "== example pipeline (1800 32x32 PNGs)"
sed "s#path: ../data/cats_dogs#path: $PWD/data/cats_dogs#; s#name: cats_dogs#name: cats_dogs\ncache: cache#" \
  pipelines/cats_dogs.yaml > "$WORK/example.yaml"
rm -rf "$WORK/cache"
/usr/bin/time -f "cold: %e s wall, peak RSS %M KB" "$BIN" run "$WORK/example.yaml" > /dev/null
for i in 1 2 3; do /usr/bin/time -f "warm: %e s wall, peak RSS %M KB" "$BIN" run "$WORK/example.yaml" > /dev/null; done

for n in 1000 "$N"; do
  echo "== $n generated 500x375 JPEGs -> 224x224 float32"
  [ -d "$WORK/corpus$n" ] || python3 tools/make_corpus.py "$WORK/corpus$n" "$n" > /dev/null
  cat > "$WORK/big$n.yaml" <<YAML
name: big$n
cache: cache$n
stages:
  ingest: {kind: ingest, path: corpus$n}
  split: {kind: split, train: 0.8, val: 0.1, test: 0.1}
  resize: {kind: resize, size: [224, 224]}
  mean_subtract: {kind: mean_subtract, mean: [103.939, 116.779, 123.68], channel_order: bgr}
  normalize: {kind: normalize, method: per_image}
YAML
  rm -rf "$WORK/cache$n"
  /usr/bin/time -f "cold: %e s wall, peak RSS %M KB" "$BIN" run "$WORK/big$n.yaml"
  /usr/bin/time -f "warm: %e s wall, peak RSS %M KB" "$BIN" run "$WORK/big$n.yaml" > /dev/null
  du -sh "$WORK/cache$n/artifacts"
done
