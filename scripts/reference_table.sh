#!/usr/bin/env bash
# Reproduces README.md's "The reference problem, measured" table: the reference pipeline
# (pipelines/cats_dogs_reference.yaml) at its own input size 224x224 and at the shipped
# photos' 32x32, for learning rates 0.1 / 0.001 / 0.0001 and epoch counts, each a real run.
# usage: scripts/reference_table.sh          (release build; about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=$PWD/target/release/pipeline
FILE=pipelines/cats_dogs_reference.yaml
echo "| input | lr | epochs | train time | val accuracy | test accuracy | test: majority share | test: p range | \`evaluate\` says |"
echo "|---|---|---|---|---|---|---|---|---|"
row() {
  local size=$1 lr=$2 epochs=$3
  local out
  out=$("$BIN" run "$FILE" --set "resize.size=[$size,$size]" --set "train.lr=$lr" --set "train.epochs=$epochs" --force train 2>&1)
  local secs
  secs=$(sed -n 's/^train  *ran .* in \([0-9.]*s\).*/\1/p' <<<"$out")
  local fp
  fp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["fingerprint"])' cache/pipelines/cats_dogs_reference/evaluate.json)
  python3 - "cache/artifacts/$fp.report.json" "$size" "$lr" "$epochs" "$secs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
size, lr, epochs, secs = sys.argv[2:6]
m = r["metrics"]
def f(x): return "NaN" if x is None else f"{x:.2f}"
t, v = m["test"], m["val"]
c = t["collapse"]
said = "**COLLAPSE**: " + c["observed"] if c["collapsed"] else "not collapsed"
print(f"| {size}x{size} | {lr} | {epochs} | {secs} | {v['accuracy']:.3f} | {t['accuracy']:.3f} | "
      f"{100 * c['majority_fraction']:.1f}% | {f(c['probability_min'])}–{f(c['probability_max'])} | {said} |")
PY
}
for lr in 0.1 0.001 0.0001; do row 224 "$lr" 20; done
row 224 0.001 50
for lr in 0.1 0.001; do row 32 "$lr" 20; done
