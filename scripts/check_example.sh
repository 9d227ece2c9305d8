#!/usr/bin/env bash
# Runs the shipped example pipeline (release build) on a fresh cache, then checks that the
# audit is consistent and the test accuracy of its model is at least 0.68.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#path: ../data/cats_dogs#path: $PWD/data/cats_dogs#; s#^name: cats_dogs#name: cats_dogs\ncache: cache#" \
  pipelines/cats_dogs.yaml > "$work/cats_dogs.yaml"
target/release/pipeline run "$work/cats_dogs.yaml"
target/release/pipeline audit "$work/cats_dogs.yaml" --json > "$work/audit.json"
python3 - "$work/audit.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["consistent"], "the example's audit is not consistent"
ev = next(s for s in doc["stages"] if s["kind"] == "evaluate")["evaluation"]
acc = ev["metrics"]["test"]["accuracy"]
print(f"example: test accuracy {acc:.4f}, collapsed partitions: {ev['collapsed']}")
assert acc >= 0.68, f"test accuracy {acc} < 0.68"
assert not ev["collapsed"]
PY
