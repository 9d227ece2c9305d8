#!/usr/bin/env bash
# The test suite, with its set-up: the Python packages the interop tests use (pyarrow,
# polars, numpy) are installed first, then every Rust unit and integration test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
cargo test --all-targets "$@"
