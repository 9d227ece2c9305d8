#!/usr/bin/env bash
# The Python package's batch `transform` against the CLI's `resize` stage on the same files,
# side by side in one run (bench/python_transform.py says what each side measures).
#
# usage: scripts/bench_python.sh [N] [REPS]      (defaults N=2000 500x375 JPEGs, REPS=3)
#
# WORK=DIR (default /tmp/pipeline-bench-python) holds the venv the package is installed into
# (`pip install ./python`, as README says), the JPEGs and the projects.
set -euo pipefail
export LC_NUMERIC=C
cd "$(dirname "$0")/.."
N=${1:-2000}
REPS=${2:-3}
WORK=${WORK:-/tmp/pipeline-bench-python}
mkdir -p "$WORK"
cargo build --release --quiet
[ -x "$WORK/venv/bin/python" ] || python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check pillow ./python
"$WORK/venv/bin/python" bench/python_transform.py target/release/pipeline "$WORK" --n "$N" --reps "$REPS"
