#!/usr/bin/env bash
# Scale-out, measured side by side in one run on generated 500x375 JPEGs (tools/make_corpus.py)
# to 224x224 (`ingest`, `split`, `resize`), against what the same S3 server allows:
#
#   A  cold single-process local run of the stages
#   U  uploading the sharded run's objects (same count, same bytes) to the same server (boto3)
#   B  SHARDS shards as a Slurm array job (deploy/slurm/submit.sh) into an s3:// cache on
#      moto_server, then the merge job: from submitting to the merge's end       target B <= 1.3 (A+U)
#   C  another machine (empty local cache) running the pipeline: it copies, computes nothing
#   D  downloading the same objects from the same server (boto3)                target C <= 1.2 D
#   R  requests a warm no-op run sends to the server (moto's log)               target R <= 20
#
# usage: scripts/bench_shards.sh [N] [SHARDS]        (defaults 5000 and 4)
# Environment: WORK=DIR (default /tmp/pipeline-bench-shards), BENCH_NO_BUILD=1. Needs root or
# sudo (scripts/slurm.sh starts a one-node Slurm cluster), python3, GNU time.
set -euo pipefail
export LC_NUMERIC=C
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-5000}
SHARDS=${2:-4}
[[ $N =~ ^[0-9]+$ && $N -ge 8 ]] || { echo "bench_shards.sh: N must be an integer >= 8" >&2; exit 2; }
[[ $SHARDS =~ ^[0-9]+$ && $SHARDS -ge 1 ]] || { echo "bench_shards.sh: SHARDS must be an integer >= 1" >&2; exit 2; }
WORK=${WORK:-/tmp/pipeline-bench-shards}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
BIN=$ROOT/target/release/pipeline
[[ ${BENCH_NO_BUILD:-} == 1 ]] || cargo build --release --quiet

VENV=$WORK/venv
PY=$VENV/bin/python
if ! "$PY" -c 'import numpy, PIL, boto3, moto' 2> /dev/null; then
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check numpy pillow 'moto[server]' boto3
fi
CORPUS=$WORK/corpus-$N
if [[ $(find "$CORPUS" -maxdepth 1 -name '*.jpg' 2> /dev/null | wc -l) -ne $N ]]; then
  rm -rf "$CORPUS"
  "$PY" "$ROOT/tools/make_corpus.py" "$CORPUS" "$N" --size 500x375 --quality 90 >&2
fi
find "$CORPUS" -maxdepth 1 -name '*.jpg' -exec cat {} + > /dev/null   # in the page cache

# The servers: moto on a free port, a one-node Slurm cluster; stopped by their PIDs.
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" 2> "$WORK/moto.log" > /dev/null &
MOTO=$!
trap 'kill $MOTO 2> /dev/null || true; scripts/slurm.sh stop "$WORK/slurm"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT" && break; sleep 0.1; done
scripts/slurm.sh start "$WORK/slurm" >&2
export SLURM_CONF=$WORK/slurm/slurm.conf
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true PIPELINE_DATA_ROOTS=$CORPUS
curl -s -X PUT "http://127.0.0.1:$PORT/bench" > /dev/null

project() {  # project DIR: a project over the corpus with the data stages to 224x224
  rm -rf "$1"; mkdir -p "$1"
  cat > "$1/pipeline.yaml" <<YAML
name: shards
seed: 42
stages:
  ingest: {kind: ingest, path: $CORPUS}
  split: {kind: split, train: 0.7, val: 0.15, test: 0.15}
  resize: {kind: resize, size: [224, 224]}
YAML
}
timed() {  # timed NAME CMD...: wall seconds and peak RSS (KB) of CMD into $WORK/NAME.time
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" > "$WORK/$name.log" 2>&1
}
boto() {  # boto up|down PREFIX: time moving every object of s3://bench/sharded/ (as listed)
  "$PY" - "$1" "$2" "$WORK/objects" <<'PY'
import os, sys, time, boto3
mode, prefix, folder = sys.argv[1:4]
s3 = boto3.client("s3")
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="sharded/")
        for o in page.get("Contents", [])]
os.makedirs(folder, exist_ok=True)
# One request per object, streamed (the fastest boto3 goes against this server here; its
# threaded download_file took 5x longer).
if mode == "down":
    start = time.time()
    for k in keys:
        with open(os.path.join(folder, k.replace("/", "_")), "wb") as f:
            for part in s3.get_object(Bucket="bench", Key=k)["Body"].iter_chunks(1 << 20):
                f.write(part)
else:
    start = time.time()
    for k in keys:
        with open(os.path.join(folder, k.replace("/", "_")), "rb") as f:
            s3.put_object(Bucket="bench", Key=prefix + k, Body=f)
size = sum(os.path.getsize(os.path.join(folder, k.replace("/", "_"))) for k in keys)
print(f"{time.time() - start:.2f} {len(keys)} {size}")
PY
}

echo "A: cold single-process local run" >&2
project "$WORK/single"
(cd "$WORK/single" && timed single "$BIN" run pipeline.yaml)

echo "B: $SHARDS shards through Slurm into s3://bench/sharded, then the merge" >&2
project "$WORK/sharded"
start=$(date +%s.%N)
said=$(cd "$WORK/sharded" && PIPELINE_BIN=$BIN PIPELINE_CACHE=s3://bench/sharded \
  "$ROOT/deploy/slurm/submit.sh" "$WORK/sharded/pipeline.yaml" "$SHARDS")
merge=${said##*merge: job }
while [[ -n $(squeue -h -j "$merge" 2> /dev/null) ]]; do sleep 0.2; done
B=$(echo "$(date +%s.%N) - $start" | bc)
grep -q "reused from $SHARDS shards" "$WORK/sharded/pipeline-merge-$merge.out" \
  || { cat "$WORK/sharded"/pipeline-*.out >&2; echo "bench_shards.sh: the merge did not reuse the shards" >&2; exit 1; }
(cd "$WORK/single" && "$BIN" export pipeline.yaml --stage resize -o "$WORK/single.arrow" > /dev/null)
(cd "$WORK/sharded" && PIPELINE_CACHE=s3://bench/sharded "$BIN" export pipeline.yaml --stage resize \
  -o "$WORK/sharded.arrow" > /dev/null)
cmp "$WORK/single.arrow" "$WORK/sharded.arrow" \
  || { echo "bench_shards.sh: the merged resize differs from the single process's" >&2; exit 1; }
rm -f "$WORK/single.arrow" "$WORK/sharded.arrow"

echo "D, U: the same objects downloaded and uploaded with boto3" >&2
read -r D OBJECTS BYTES < <(boto down x)
read -r U _ _ < <(boto up copy/)

echo "C: another machine, empty local cache" >&2
project "$WORK/other"
(cd "$WORK/other" && PIPELINE_CACHE=s3://bench/sharded timed other "$BIN" run pipeline.yaml)
grep -q " ran " "$WORK/other.log" && { cat "$WORK/other.log" >&2; echo "bench_shards.sh: the other machine computed" >&2; exit 1; }
before=$(grep -c 'HTTP/1.1" ' "$WORK/moto.log")
(cd "$WORK/other" && PIPELINE_CACHE=s3://bench/sharded timed warm "$BIN" run pipeline.yaml)
R=$(( $(grep -c 'HTTP/1.1" ' "$WORK/moto.log") - before ))

read -r A A_RSS < "$WORK/single.time"
read -r C C_RSS < "$WORK/other.time"
python3 - "$N" "$SHARDS" "$A" "$U" "$B" "$C" "$D" "$R" "$OBJECTS" "$BYTES" "$A_RSS" "$C_RSS" <<'PY'
import sys
n, shards = sys.argv[1:3]
a, u, b, c, d = (float(v) for v in sys.argv[3:8])
r, objects, size, a_rss, c_rss = (int(v) for v in sys.argv[8:13])
ok = lambda good: "ok" if good else "FAIL"
print(f"{n} JPEGs 500x375 -> 224x224, {shards} shards, {objects} objects ({size / 1e6:.0f} MB) in the shared cache")
print(f"A  single process, local, cold      {a:7.2f} s   peak {a_rss / 1024:.0f} MB")
print(f"U  upload the same objects (boto3)  {u:7.2f} s")
print(f"B  shards via Slurm into S3 + merge {b:7.2f} s   = {b / (a + u):.2f} x (A+U)   target <= 1.3  {ok(b <= 1.3 * (a + u))}")
print(f"D  download the same objects        {d:7.2f} s")
print(f"C  another machine copies           {c:7.2f} s   = {c / d:.2f} x D         target <= 1.2  {ok(c <= 1.2 * d)}   peak {c_rss / 1024:.0f} MB")
print(f"R  requests of a warm no-op run     {r:7d}                          target <= 20   {ok(r <= 20)}")
PY
