#!/usr/bin/env bash
# What checking artifacts as they are read costs. Runs the reference pipeline
# (pipelines/cats_dogs_reference.yaml at 224x224, with the mean fitted on the train rows so that
# `mean_subtract` reads every pixel, then `validate`, a 2-epoch `train` and `evaluate`) cold on
# the shipped photos, RUNS times with each of two binaries, alternating: the product, and the
# same code built with `--features unchecked-reads` (the baseline: no chunk is checked). It
# prints per stage the median seconds of each (from the stages' cache records), the
# difference, and the CPU seconds the product spent checking (`check_seconds`).
#
# usage: scripts/bench_check.sh [RUNS]        (default 5)
#
# Environment: WORK=DIR (default /tmp/pipeline-bench-check), BENCH_NO_BUILD=1 to use the
# binaries as they are (target/release and target/unchecked/release).
set -euo pipefail
export LC_NUMERIC=C
cd "$(dirname "$0")/.."
RUNS=${1:-5}
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 ]] || { echo "bench_check.sh: RUNS must be an integer >= 1" >&2; exit 2; }
WORK=${WORK:-/tmp/pipeline-bench-check}
mkdir -p "$WORK"
if [[ ${BENCH_NO_BUILD:-} != 1 ]]; then
  cargo build --release --quiet
  CARGO_TARGET_DIR=$PWD/target/unchecked cargo build --release --quiet --features unchecked-reads
fi
declare -A BIN=([checked]=$PWD/target/release/pipeline [unchecked]=$PWD/target/unchecked/release/pipeline)
SETS=(--set mean_subtract.mean=fit --set mean_subtract.channel_order=rgb --set train.epochs=2 --set train.lr=0.001)
: > "$WORK/records.jsonl"
for run in $(seq "$RUNS"); do
  for variant in checked unchecked; do
    rm -rf "$WORK/cache"
    echo "run $run of $RUNS: $variant" >&2
    PIPELINE_CACHE=$WORK/cache "${BIN[$variant]}" run pipelines/cats_dogs_reference.yaml "${SETS[@]}" > "$WORK/run-$run-$variant.log"
    python3 - "$WORK/cache" "$run" "$variant" >> "$WORK/records.jsonl" <<'PY'
import json, pathlib, sys
cache, run, variant = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for pointer in sorted((cache / "pipelines" / "cats_dogs_reference").glob("*.json")):
    fp = json.loads(pointer.read_text())["fingerprint"]
    r = json.loads((cache / "artifacts" / f"{fp}.json").read_text())
    print(json.dumps({"run": run, "variant": variant, "stage": r["stage"], "seconds": r["seconds"],
                      "check_seconds": r.get("check_seconds", 0.0)}))
PY
  done
done
python3 - "$WORK/records.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda stage, variant, key: statistics.median(
    r[key] for r in rows if r["stage"] == stage and r["variant"] == variant)
runs = max(r["run"] for r in rows)
print(f"| stage | checked s | unchecked s | difference | checking CPU s |   (medians of {runs})")
print("|---|--:|--:|--:|--:|")
for stage in ["ingest", "split", "resize", "mean_subtract", "normalize", "validate", "train", "evaluate"]:
    if not any(r["stage"] == stage for r in rows):
        continue
    c, u = med(stage, "checked", "seconds"), med(stage, "unchecked", "seconds")
    diff = f"{100 * (c - u) / u:+.1f}%" if u > 0 else "-"
    print(f"| {stage} | {c:.3f} | {u:.3f} | {diff} | {med(stage, 'checked', 'check_seconds'):.4f} |")
PY
