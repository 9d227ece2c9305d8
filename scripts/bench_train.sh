#!/usr/bin/env bash
# Training against PyTorch, side by side in one run on the same split and preprocessing:
# `pipeline`'s ResNet recipe (the example, pipelines/cats_dogs.yaml) and the PyTorch CPU recipe of
# bench/torch_recipe.py, trained on the rows `pipeline export --stage normalize` wrote, SEEDS
# seeds each on THREADS threads. Prints both test accuracies (mean and spread, and paired on
# the same test images), both train times, `pipeline`'s peak memory, and its training speed
# at -j 1 against -j 2 (2 epochs each).
#
# usage: scripts/bench_train.sh [SEEDS] [EPOCHS]      (defaults "42 1 2", 40)
#
# TORCH_ARGS adds arguments to bench/torch_recipe.py (e.g. "--pool avg --lr 0.05 --smoothing 0
# --residual 3",
# `pipeline`'s own recipe in PyTorch).
# WORK=DIR (default /tmp/pipeline-bench-train) holds the venv PyTorch is installed into (from
# PyPI, once: about 3 GB with its CUDA libraries, which the CPU run does not use), the project
# and the results. THREADS (default 2) is the thread count of both sides.
set -euo pipefail
export LC_NUMERIC=C
cd "$(dirname "$0")/.."
SEEDS=${1:-"42 1 2"}
EPOCHS=${2:-40}
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/pipeline-bench-train}
mkdir -p "$WORK/results"
cargo build --release --quiet
cp target/release/pipeline "$WORK/pipeline"
bin="$WORK/pipeline"
[ -x "$WORK/venv/bin/python" ] || python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -c "import torch, pyarrow, numpy" 2>/dev/null ||
  "$WORK/venv/bin/pip" install --quiet --disable-pip-version-check torch numpy pyarrow

# The ResNet pipeline in WORK (its cache in WORK/cache), reading the shipped photos here.
export PIPELINE_DATA_ROOTS="$PWD/data"
rm -rf "$WORK/cache"
sed "s#path: ../data/cats_dogs#path: $PWD/data/cats_dogs#; s#^name: cats_dogs#name: cats_dogs\ncache: cache#" \
  pipelines/cats_dogs.yaml > "$WORK/resnet.yaml"
yaml="$WORK/resnet.yaml"
"$bin" run "$yaml" --stage validate > /dev/null
"$bin" export "$yaml" --stage normalize -o "$WORK/normalize.arrow" > /dev/null

for seed in $SEEDS; do
  set_=(--set "train.seed=$seed" --set "train.epochs=$EPOCHS")
  /usr/bin/time -f "%M" -o "$WORK/results/rss-$seed" \
    "$bin" run "$yaml" -j "$THREADS" "${set_[@]}" --force train > "$WORK/results/pipeline-$seed.log"
  "$bin" audit "$yaml" "${set_[@]}" --json > "$WORK/results/pipeline-$seed.json"
  OMP_NUM_THREADS=$THREADS "$WORK/venv/bin/python" bench/torch_recipe.py "$WORK/normalize.arrow" \
    --seed "$seed" --threads "$THREADS" --epochs "$EPOCHS" --out "$WORK/results/torch-$seed.json" \
    ${TORCH_ARGS:-} |
    tail -1
done

# Steps per second at -j 1 and -j 2: two epochs each, the record's train seconds.
for j in 1 2; do
  "$bin" run "$yaml" -j "$j" --set train.epochs=2 --force train > /dev/null
  "$bin" audit "$yaml" --set train.epochs=2 --json > "$WORK/results/speed-j$j.json"
done

"$WORK/venv/bin/python" - "$WORK" "$SEEDS" <<'PY'
import json, os, statistics as st, sys
work, seeds = sys.argv[1], sys.argv[2].split()
res = os.path.join(work, "results")

def stage(doc, kind):
    return next(s for s in doc["stages"] if s["kind"] == kind)

def ours(seed):
    doc = json.load(open(os.path.join(res, f"pipeline-{seed}.json")))
    model, ev = stage(doc, "train")["model"], stage(doc, "evaluate")["evaluation"]
    rss = int(open(os.path.join(res, f"rss-{seed}")).read().split()[-1]) / 1024
    # The evaluate report: per-row predictions, to pair with PyTorch's on the same images.
    fp = stage(doc, "evaluate")["fingerprint"]
    report = json.load(open(os.path.join(work, "cache", "artifacts", f"{fp}.report.json")))
    test = {}
    for r in report["predictions"]:
        if r["partition"] == "test":
            pr = r["probabilities"]
            test[r["path"]] = max(range(len(pr)), key=lambda j: (pr[j], -j)) == r["label"]
    return dict(seconds=model["train_seconds"], val=model["best_val_accuracy"],
                test=ev["metrics"]["test"]["accuracy"], rows=test, rss=rss)

def torch_(seed):
    r = json.load(open(os.path.join(res, f"torch-{seed}.json")))
    return dict(seconds=r["train_seconds"], val=r["val_accuracy"], test=r["test_accuracy"], rows=r["test"])

def ms(v):
    return f"{st.mean(v):.4f} ± {st.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"

P, T = [ours(s) for s in seeds], [torch_(s) for s in seeds]
print(f"\n| seeds {' '.join(seeds)} | pipeline (ResNet) | PyTorch recipe |")
print("|---|---|---|")
print(f"| test accuracy | {ms([p['test'] for p in P])} | {ms([t['test'] for t in T])} |")
print(f"| val accuracy (best epoch) | {ms([p['val'] for p in P])} | {ms([t['val'] for t in T])} |")
print(f"| train seconds | {ms([p['seconds'] for p in P])} | {ms([t['seconds'] for t in T])} |")
per_seed = [" ".join("%.3f" % r["test"] for r in side) for side in (P, T)]
print(f"| per seed test | {per_seed[0]} | {per_seed[1]} |")
# Paired on the same test images: the mean per-seed difference and the images only one side got right.
diffs, only_p, only_t = [], 0, 0
for p, t in zip(P, T):
    common = p["rows"].keys() & t["rows"].keys()
    diffs.append(sum(p["rows"][k] - t["rows"][k] for k in common) / len(common))
    only_p += sum(p["rows"][k] and not t["rows"][k] for k in common)
    only_t += sum(t["rows"][k] and not p["rows"][k] for k in common)
print(f"\npaired on {len(common)} test images: pipeline − PyTorch = {ms(diffs)} "
      f"(right only by pipeline: {only_p}, only by PyTorch: {only_t}, over {len(seeds)} seeds)")
ratio = st.mean(p["seconds"] for p in P) / st.mean(t["seconds"] for t in T)
print(f"train time: pipeline / PyTorch = {ratio:.2f}x; pipeline peak RSS {max(p['rss'] for p in P):.0f} MiB")
speed = {}
for j in (1, 2):
    doc = json.load(open(os.path.join(res, f"speed-j{j}.json")))
    m = stage(doc, "train")["model"]
    speed[j] = len(m["history"]) * -(-m["train_rows"] // 64) / m["train_seconds"]
print(f"steps/s (2 epochs, val scoring included): -j 1 {speed[1]:.2f}, -j 2 {speed[2]:.2f} "
      f"({speed[2] / speed[1]:.2f}x)")
PY
