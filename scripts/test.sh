#!/usr/bin/env bash
# The test suite, with its set-up: the Python packages the tests use (pyarrow, polars and
# numpy for the interop tests, moto's S3 server, which the shared-cache tests start on
# 127.0.0.1) are installed, and a one-node Slurm cluster is started for the sharded-run test
# (scripts/slurm.sh; stopped by its PIDs when the tests end); then every Rust unit and
# integration test runs. In release: the tests run the binary on real pixels and train
# models, and the build is the one `cargo build --release` made.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
slurm=$(mktemp -d)
trap 'scripts/slurm.sh stop "$slurm"; rm -rf "$slurm"' EXIT
scripts/slurm.sh start "$slurm"
SLURM_CONF="$slurm/slurm.conf" cargo test --release --all-targets "$@"
