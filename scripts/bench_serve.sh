#!/usr/bin/env bash
# `pipeline serve` under load: requests/s and p50/p99 latency on this machine, the example's
# model (pipelines/cats_dogs.yaml, trained first if its cache lacks the model) answering POSTed
# shipped photos. One connection per request, bounded: REQUESTS in all from CONCURRENCY client
# threads (Python's http.client), against a server on 127.0.0.1 with WORKERS threads.
#
# usage: scripts/bench_serve.sh [REQUESTS] [CONCURRENCY] [WORKERS]   (defaults 3000 8 2)
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-3000}
CONCURRENCY=${2:-8}
WORKERS=${3:-2}
[[ ${BENCH_NO_BUILD:-0} == 1 ]] || cargo build --release --quiet
BIN=target/release/pipeline
"$BIN" run pipelines/cats_dogs.yaml > /dev/null
LOG=$(mktemp)
"$BIN" serve pipelines/cats_dogs.yaml --addr 127.0.0.1:0 --workers "$WORKERS" > "$LOG" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2> /dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 100); do grep -q 'http://' "$LOG" && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$LOG" | head -1)
[[ -n $URL ]] || { cat "$LOG" >&2; exit 1; }
IMAGES=(data/cats_dogs/cat.1{0..9}.png data/cats_dogs/dog.1{0..9}.png)
python3 bench/serve_load.py "$URL" 200 "$CONCURRENCY" "${IMAGES[@]}" > /dev/null   # warm-up
echo "serve ($WORKERS workers), $REQUESTS requests from $CONCURRENCY clients:"
python3 bench/serve_load.py "$URL" "$REQUESTS" "$CONCURRENCY" "${IMAGES[@]}"
kill -TERM $SERVER
wait $SERVER
