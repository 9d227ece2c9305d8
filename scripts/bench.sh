#!/usr/bin/env bash
# Benchmark harness: `pipeline` against the reference recipe (Python + OpenCV), a decode-only
# floor and DVC, on generated 500x375 JPEGs. See bench/README.md for what each row measures.
#
# usage: scripts/bench.sh [N] [BIG]        (defaults N=5000, BIG=25000; BIG=0 skips that part)
#
# Environment:
#   WORK=DIR            working folder (default /tmp/pipeline-bench): venv, corpora, caches,
#                       logs/, results.jsonl
#   BENCH_NO_BUILD=1    do not run `cargo build --release` (use target/release/pipeline as is)
#   BENCH_BIG_DVC=0     skip `dvc repro`/`dvc status` on the big corpus
#   BENCH_DVC_CACHE_TYPE  DVC's cache.type (default reflink,hardlink,copy: no second copy
#                       of the features on disk)
#   BENCH_NO_DISK_CHECK=1  run the big corpus even when the free disk looks too small
#
# Needs python3 (venv), git, /usr/bin/time (GNU time). Every timing is the wall time and
# peak RSS that `/usr/bin/time -f '%e %M'` reports for the whole command; each is one JSON
# line in $WORK/results.jsonl; bench/report.py prints the tables at the end. A target that
# is missed is reported as FAIL, never as a nonzero exit.
set -euo pipefail
export LC_NUMERIC=C   # decimal points in timings, whatever the locale
cd "$(dirname "$0")/.."
ROOT=$PWD

N=${1:-5000}
BIG=${2:-25000}
[[ $N =~ ^[0-9]+$ && $N -ge 2 ]] || { echo "bench.sh: N must be an integer >= 2 (got '$N')" >&2; exit 2; }
[[ $BIG =~ ^[0-9]+$ ]] || { echo "bench.sh: BIG must be an integer >= 0 (got '$BIG')" >&2; exit 2; }
ADD=$(( N / 100 > 0 ? N / 100 : 1 ))   # the "+1%" images
SIZES=(224 64)                         # output sizes S of the cold-throughput sections

WORK=${WORK:-/tmp/pipeline-bench}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
mkdir -p "$WORK/logs" "$WORK/out"
# One run per WORK: two runs sharing the folder delete each other's outputs (seen: the
# reference died of SIGBUS when the other run removed its memory-mapped .npy).
exec 9> "$WORK/.bench.lock"
if ! flock -n 9; then
  echo "bench.sh: another bench.sh is running on $WORK (it holds $WORK/.bench.lock); wait for it or set WORK" >&2
  exit 1
fi
RESULTS=$WORK/results.jsonl
if [[ -s $RESULTS ]]; then mv "$RESULTS" "$WORK/results.prev.jsonl"; fi
: > "$RESULTS"

say() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench.sh: $*" >&2; exit 1; }

[[ -x /usr/bin/time ]] || die "needs GNU time at /usr/bin/time (apt-get install time)"
command -v git > /dev/null || die "needs git (for the DVC project)"

# ---------------------------------------------------------------- Python tools (venv) ----
VENV=$WORK/venv
PY=$VENV/bin/python
DVC=$VENV/bin/dvc
if ! { [[ -x $PY && -x $DVC ]] && "$PY" -c 'import cv2, numpy, PIL' 2> /dev/null; }; then
  say "installing opencv-python-headless numpy pillow dvc into $VENV"
  [[ -x $PY ]] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check opencv-python-headless numpy pillow dvc
fi
export DVC_NO_ANALYTICS=1

# ---------------------------------------------------------------- the binary ----
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
  say "cargo build --release"
  cargo build --release --quiet
fi
[[ -x $ROOT/target/release/pipeline ]] || die "no $ROOT/target/release/pipeline (build it, or drop BENCH_NO_BUILD)"
# A private copy, so a rebuild during the benchmark cannot change the binary under test.
PBIN=$WORK/pipeline
cp "$ROOT/target/release/pipeline" "$PBIN.tmp" && mv "$PBIN.tmp" "$PBIN"
# Everything the pipeline files read lives in $WORK; each run names its cache explicitly.
export PIPELINE_DATA_ROOTS=$WORK

json_str() { "$PY" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
{
  printf '{"type":"meta","n":%d,"big":%d,"add":%d,"work":%s,' "$N" "$BIG" "$ADD" "$(json_str "$WORK")"
  printf '"date":%s,"commit":%s,"dirty":%s,' "$(json_str "$(date -u +%FT%TZ)")" \
    "$(json_str "$(git rev-parse --short HEAD 2> /dev/null || echo unknown)")" \
    "$( [[ -z $(git status --porcelain -- src Cargo.toml Cargo.lock 2> /dev/null) ]] && echo false || echo true)"
  printf '"binary_sha256":%s,"binary_mtime":%s,"cores":%d,"cpu":%s,' \
    "$(json_str "$(sha256sum "$PBIN" | cut -c1-16)")" \
    "$(json_str "$(date -u -r "$ROOT/target/release/pipeline" +%FT%TZ)")" "$(nproc)" \
    "$(json_str "$(grep -m1 'model name' /proc/cpuinfo 2> /dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)")"
  printf '"versions":%s}\n' "$("$PY" -c '
import json, cv2, numpy, PIL, importlib.metadata as m
print(json.dumps({"opencv": cv2.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__,
                  "dvc": m.version("dvc")}))')"
} >> "$RESULTS"

# ---------------------------------------------------------------- helpers ----
# measure NAME SIZE IMAGES REP -- CMD... : run CMD under /usr/bin/time (stdout+stderr to
# logs/NAME.REP.log) and append its wall seconds and peak RSS to results.jsonl. A failing
# command is recorded with its exit code and reported, and the benchmark goes on.
measure() {
  local name=$1 size=$2 images=$3 rep=$4
  shift 5
  local logf="$WORK/logs/$name.$rep.log" tf="$WORK/logs/.time" rc=0 secs rss extra counts
  sync   # no write-back of an earlier step's files during this one
  # Wall time from bash's microsecond clock (GNU time's %e has 10 ms steps, too coarse for
  # a warm run); GNU time gives the peak RSS.
  local t0=$EPOCHREALTIME t1
  /usr/bin/time -o "$tf" -f '%e %M' "$@" > "$logf" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  read -r secs rss < <(tail -n 1 "$tf") || true
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
  [[ $secs =~ ^[0-9.]+$ ]] || secs=null
  [[ $rss =~ ^[0-9]+$ ]] || rss=null
  # `BENCH {json}` lines of bench/*.py; the per-stage verbs of `pipeline run/status`.
  extra=$(grep '^BENCH ' "$logf" | tail -n 1 | cut -c7- || true)
  extra=${extra#\{}
  extra=${extra%\}}
  counts=$(awk '$2 ~ /^(ran|cached|fresh|stale)$/ {c[$2]++}
                END {s = ""; for (k in c) s = s sprintf(",\"%s\":%d", k, c[k]); print s}' "$logf")
  printf '{"type":"measure","name":"%s","size":%d,"images":%d,"rep":%d,"seconds":%s,"rss_kb":%s,"rc":%d,"log":%s%s%s}\n' \
    "$name" "$size" "$images" "$rep" "$secs" "$rss" "$rc" "$(json_str "$logf")" \
    "${extra:+,$extra}" "$counts" >> "$RESULTS"
  if ((rc != 0)); then
    echo "bench.sh: $name (rep $rep) failed with exit code $rc; last lines of $logf:" >&2
    tail -n 5 "$logf" | sed 's/^/    /' >&2
  else
    printf '   %-24s %8s s  %6s MB peak RSS\n' "$name$( ((rep > 0)) && echo " #$rep")" "$secs" \
      "$( [[ $rss == null ]] && echo '?' || echo $((rss / 1024)))" >&2
  fi
}

# measure3 NAME SIZE IMAGES -- CMD... : three repetitions (the report takes the median).
measure3() {
  local r
  for r in 1 2 3; do measure "$1" "$2" "$3" "$r" -- "${@:5}"; done
}

skip() {  # skip NAME REASON: record a row that was not measured
  echo "bench.sh: skipping $1: $2" >&2
  printf '{"type":"skip","name":"%s","reason":%s}\n' "$1" "$(json_str "$2")" >> "$RESULTS"
}

# ensure_corpus DIR COUNT: the first COUNT images of tools/make_corpus.py (reused when a
# previous run finished writing them: DIR.done holds the count).
ensure_corpus() {
  local dir=$1 count=$2
  if [[ -d $dir && -f $dir.done && $(cat "$dir.done") == "$count" &&
        $(find "$dir" -maxdepth 1 -name '*.jpg' | wc -l) -eq $count ]]; then
    echo "   reusing $dir ($count images)" >&2
    return
  fi
  rm -rf "$dir" "$dir.done"
  say "generating $count JPEGs into $dir"
  "$PY" tools/make_corpus.py "$dir" "$count" --size 500x375 --quality 90 >&2
  echo "$count" > "$dir.done"
}

# write_pipeline FILE NAME CORPUS_DIR S: the reference recipe as a pipeline file.
write_pipeline() {
  cat > "$1" << YAML
# Written by scripts/bench.sh: the reference recipe of docs/design.md (BGR ImageNet means,
# per-image standardization) on $(basename "$3"). bench.sh sets PIPELINE_CACHE for every
# run (it overrides cache:) and PIPELINE_DATA_ROOTS=$WORK.
name: $2
cache: cache-$2
stages:
  ingest:
    kind: ingest
    path: $(basename "$3")
  resize:
    kind: resize
    size: [$4, $4]
    filter: bilinear
    mode: stretch
  mean_subtract:
    kind: mean_subtract
    mean: [103.939, 116.779, 123.68]
    channel_order: bgr
  normalize:
    kind: normalize
    method: per_image
YAML
}

cache_stats() {  # cache_stats CACHE NAME IMAGES S LABEL: bytes per stage into results.jsonl
  "$PY" bench/cache_stats.py "$1" --pipeline "$2" --images "$3" --size "$4" --label "$5" \
    --append "$RESULTS" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["total_bytes"])'
}

free_bytes() { df -PB1 "$WORK" | awk 'NR == 2 {print $4}'; }

# cpu_busy WHEN: how busy the CPUs are with other work (2 s sample of /proc/stat), recorded
# so the report can warn when the numbers were taken on a loaded machine.
cpu_busy() {
  "$PY" - "$1" >> "$RESULTS" << 'PYTHON'
import json, sys, time
def sample():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait
t0, i0 = sample(); time.sleep(2); t1, i1 = sample()
busy = 100.0 * (1 - (i1 - i0) / max(t1 - t0, 1))
print(json.dumps({"type": "load", "when": sys.argv[1], "busy_pct": round(busy, 1),
                  "loadavg": open("/proc/loadavg").read().split()[:3]}))
PYTHON
}

# setup_dvc DIR CORPUS S: a git+DVC project whose one stage runs the reference (1 process);
# dvc.lock, the output and DVC's cache are removed so that the next `dvc repro` is cold.
setup_dvc() {
  local dir=$1 corpus=$2 size=$3
  mkdir -p "$dir"
  (
    cd "$dir"
    [[ -d .git ]] || git init -q
    [[ -d .dvc ]] || "$DVC" init -q
    "$DVC" config core.analytics false
    "$DVC" config core.check_update false
    "$DVC" config cache.type "${BENCH_DVC_CACHE_TYPE:-reflink,hardlink,copy}"
    rm -rf dvc.lock features.npy .dvc/cache .dvc/tmp
    cat > dvc.yaml << YAML
# Written by scripts/bench.sh: the reference recipe (bench/reference.py, one process) as a
# DVC stage over the corpus folder.
stages:
  features:
    cmd: '"$PY" "$ROOT/bench/reference.py" "$corpus" features.npy --size $size'
    deps:
      - $corpus
      - $ROOT/bench/reference.py
    outs:
      - features.npy
YAML
  )
}

ADDED=()
remove_added() {  # take the "+1%" images out of the corpus again
  local f
  for f in "${ADDED[@]+"${ADDED[@]}"}"; do rm -f "$f"; done
  ADDED=()
}
trap remove_added EXIT

CORPUS=$WORK/corpus-$N
ADD_DIR=$WORK/add-$N-$ADD
# Leftovers of an interrupted run's "+1%" step.
if [[ -d $ADD_DIR && -d $CORPUS ]]; then
  for f in "$ADD_DIR"/*.jpg; do
    if [[ -e $f ]]; then rm -f "$CORPUS/$(basename "$f")"; fi
  done
fi

cpu_busy start

# ---------------------------------------------------------------- 1. corpora ----
say "1. corpus: $N JPEGs of 500x375, quality 90"
ensure_corpus "$CORPUS" "$N"
if [[ ! -f $ADD_DIR.done ]]; then
  rm -rf "$ADD_DIR"
  "$PY" tools/make_corpus.py "$ADD_DIR" "$ADD" --start "$N" >&2
  touch "$ADD_DIR.done"
fi
# Every row below starts with the corpus in the page cache.
find "$CORPUS" -maxdepth 1 -name '*.jpg' -exec cat {} + > /dev/null

# ---------------------------------------------------------------- 2-4. cold throughput ----
for S in "${SIZES[@]}"; do
  say "2-4. cold throughput at ${S}x${S} ($N images)"
  out=$WORK/out/ref-$S.npy
  measure "ref1-$S" "$S" "$N" 0 -- "$PY" bench/reference.py "$CORPUS" "$out" --size "$S"
  if ((S == 64)); then mv -f "$out" "$WORK/out/ref1-$S.npy"; else rm -f "$out"; fi  # check below
  measure "ref2-$S" "$S" "$N" 0 -- "$PY" bench/reference.py "$CORPUS" "$out" --size "$S" --workers 2
  rm -f "$out"
  measure "floor1-$S" "$S" "$N" 0 -- "$PY" bench/floor.py "$CORPUS" --size "$S"
  # The two sides of the floor ratio vary by up to 30% from run to run here (the same binary
  # took 2.4 s and 3.2 s cold at 64x64): each is the median of 3, the pipeline's from an
  # empty cache every time.
  measure3 "floor2-$S" "$S" "$N" -- "$PY" bench/floor.py "$CORPUS" --size "$S" --workers 2
  write_pipeline "$WORK/bench$S.yaml" "bench$S" "$CORPUS" "$S"
  for r in 1 2 3; do
    rm -rf "$WORK/cache-bench$S"
    measure "cold-$S" "$S" "$N" "$r" -- env PIPELINE_CACHE="$WORK/cache-bench$S" "$PBIN" run "$WORK/bench$S.yaml"
  done
  cache_stats "$WORK/cache-bench$S" "bench$S" "$N" "$S" "N=$N, ${S}x${S}" > /dev/null
  # Untimed: does the pipeline compute what the reference computes? `audit --compare` names
  # the hypothesis that explains the reference's features; expected: `bgr` (OpenCV's channel
  # order; the pipeline stores RGB). Only at 64x64, where the features are small.
  if ((S == 64)); then
    env PIPELINE_CACHE="$WORK/cache-bench$S" "$PBIN" audit "$WORK/bench$S.yaml" \
      --compare "$WORK/out/ref1-$S.npy" > "$WORK/logs/audit-compare-$S.log" 2>&1 || true
    best=$(awk '/hypotheses/ {getline; print $2; exit}' "$WORK/logs/audit-compare-$S.log")
    printf '{"type":"check","name":"audit-compare-%d","best":%s,"log":%s}\n' "$S" \
      "$(json_str "${best:-none}")" "$(json_str "$WORK/logs/audit-compare-$S.log")" >> "$RESULTS"
  fi
  rm -f "$WORK/out/ref1-$S.npy"
done
rm -rf "$WORK/cache-bench64"

# ---------------------------------------------------------------- 5. warm ----
say "5. warm no-op run and status ($N images, 224x224)"
C224=(env PIPELINE_CACHE="$WORK/cache-bench224" "$PBIN")   # the binary with the N-image cache
measure3 warm-run 224 "$N" -- "${C224[@]}" run "$WORK/bench224.yaml"
measure3 warm-status 224 "$N" -- "${C224[@]}" status "$WORK/bench224.yaml"

# ---------------------------------------------------------------- 6. DVC ----
say "6. DVC: the reference as a dvc.yaml stage ($N images, 224x224)"
DVCDIR=$WORK/dvcproj
setup_dvc "$DVCDIR" "$CORPUS" 224
(
  cd "$DVCDIR"
  measure dvc-repro-cold 224 "$N" 0 -- "$DVC" repro
  measure3 dvc-status 224 "$N" -- "$DVC" status
  measure3 dvc-repro-noop 224 "$N" -- "$DVC" repro
)

# ---------------------------------------------------------------- 7. +1% ----
say "7. +1%: $ADD new images in $CORPUS"
for f in "$ADD_DIR"/*.jpg; do
  if [[ -e $CORPUS/$(basename "$f") ]]; then die "$CORPUS already holds $(basename "$f")"; fi
  cp "$f" "$CORPUS/"
  ADDED+=("$CORPUS/$(basename "$f")")
done
measure inc-run 224 "$((N + ADD))" 0 -- "${C224[@]}" run "$WORK/bench224.yaml"
(
  cd "$DVCDIR"
  measure inc-dvc-status 224 "$((N + ADD))" 0 -- "$DVC" status
  measure inc-dvc-repro 224 "$((N + ADD))" 0 -- "$DVC" repro
)
remove_added
# The N-image caches and DVC outputs are rebuilt cold by every run: free their disk now.
rm -rf "$WORK/cache-bench224" "$DVCDIR/features.npy" "$DVCDIR/.dvc/cache"

# ---------------------------------------------------------------- 8. big corpus ----
if ((BIG > 0)); then
  say "8. big corpus: $BIG images, 224x224"
  BIGC=$WORK/big-$BIG
  ensure_corpus "$BIGC" "$BIG"
  find "$BIGC" -maxdepth 1 -name '*.jpg' -exec cat {} + > /dev/null
  write_pipeline "$WORK/big224.yaml" big224 "$BIGC" 224
  # Disk needed: the N-image cache at 224 scaled to BIG images, plus 5%.
  per_image=$("$PY" -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
c = [r for r in rows if r.get("type") == "cache" and r["size"] == 224]
print(c[-1]["total_bytes"] // c[-1]["images"] if c else 12 * 224 * 224 * 3)' "$RESULTS")
  need=$((per_image * BIG * 105 / 100))
  have=$(free_bytes)
  if [[ ${BENCH_NO_DISK_CHECK:-0} != 1 ]] && ((need > have)); then
    skip big-cold "the cache would need about $((need / 1000000000)) GB, $((have / 1000000000)) GB free (BENCH_NO_DISK_CHECK=1 runs anyway)"
  else
    rm -rf "$WORK/cache-big224"
    CBIG=(env PIPELINE_CACHE="$WORK/cache-big224" "$PBIN")
    measure big-cold 224 "$BIG" 0 -- "${CBIG[@]}" run "$WORK/big224.yaml"
    cache_stats "$WORK/cache-big224" big224 "$BIG" 224 "BIG=$BIG, 224x224" > /dev/null
    measure3 big-warm-run 224 "$BIG" -- "${CBIG[@]}" run "$WORK/big224.yaml"
    measure3 big-warm-status 224 "$BIG" -- "${CBIG[@]}" status "$WORK/big224.yaml"
    rm -rf "$WORK/cache-big224"
  fi
  if [[ ${BENCH_BIG_DVC:-1} == 1 ]]; then
    need=$((BIG * 224 * 224 * 3 * 4 * 105 / 100))
    have=$(free_bytes)
    if [[ ${BENCH_NO_DISK_CHECK:-0} != 1 ]] && ((need > have)); then
      skip big-dvc-repro-cold "features.npy would need about $((need / 1000000000)) GB, $((have / 1000000000)) GB free"
    else
      setup_dvc "$WORK/dvcproj-big" "$BIGC" 224
      (
        cd "$WORK/dvcproj-big"
        measure big-dvc-repro-cold 224 "$BIG" 0 -- "$DVC" repro
        measure3 big-dvc-status 224 "$BIG" -- "$DVC" status
      )
      rm -rf "$WORK/dvcproj-big/features.npy" "$WORK/dvcproj-big/.dvc/cache"
    fi
  else
    skip big-dvc-repro-cold "BENCH_BIG_DVC=0"
  fi
fi

cpu_busy end

# ---------------------------------------------------------------- 11. report ----
say "report ($RESULTS; logs in $WORK/logs)"
"$PY" bench/report.py "$RESULTS"
