#!/usr/bin/env bash
# The test suite, with its set-up: the Python packages the tests use (pyarrow, polars and
# numpy for the interop tests, moto's S3 server for the shared-cache tests) are installed
# first, then every Rust unit and integration test runs. In release: the tests run the binary
# on real pixels and train models, and the build is the one `cargo build --release` made.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
cargo test --release --all-targets "$@"
