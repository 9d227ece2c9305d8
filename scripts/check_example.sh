#!/usr/bin/env bash
# Runs the shipped example pipeline (release build) on a fresh cache, then checks that the
# audit is consistent and the test accuracy of its model is at least 0.73 (its ResNet: 0.76
# over 3 seeds, less one standard error on 268 images); then `diagnose` on it (no blocking
# finding) and on the reference pipeline (the learning rate is named).
set -euo pipefail
cd "$(dirname "$0")/.."
# The pipelines below live in a temporary folder and read the shipped photos from here.
export PIPELINE_DATA_ROOTS="$PWD/data"
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
assert acc >= 0.73, f"test accuracy {acc} < 0.73"
assert not ev["collapsed"]
PY

# `diagnose`: the healthy example has no blocking finding; the reference pipeline (224x224,
# lr 0.1) is blamed on its learning rate, with a suggested value below the LR test's valley.
target/release/pipeline diagnose "$work/cats_dogs.yaml" | tee "$work/diagnose.txt"
grep -q "^verdict: no blocking finding" "$work/diagnose.txt"
sed "s#path: ../data/cats_dogs#path: $PWD/data/cats_dogs#; s#^name: cats_dogs_reference#name: cats_dogs_reference\ncache: cache#" \
  pipelines/cats_dogs_reference.yaml > "$work/reference.yaml"
start=$(date +%s)
target/release/pipeline diagnose "$work/reference.yaml" --json > "$work/reference.json"
echo "reference diagnose: $(($(date +%s) - start)) s including its 224x224 preprocessing"
python3 - "$work/reference.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
first = d["verdict"][0]
print("reference verdict:", first["title"], "|", "; ".join(first["changes"]))
assert first["cause"] == "learning_rate_too_high", first
sweep = next(c for c in d["checks"] if c["name"] == "lr_range")["data"]
assert sweep["suggested"] < sweep["min_lr"] < 0.1, sweep
PY
