#!/usr/bin/env bash
# The test suite, with its set-up: the Python packages the tests use (pyarrow, polars and
# numpy for the interop tests, Pillow and pypng for the decoding corpus, moto's S3 server,
# which the shared-cache tests start on 127.0.0.1), qemu-user (to run the binary as older
# CPUs) and libjpeg-turbo-progs (an arithmetic-coded JPEG) are installed, and a one-node
# Slurm cluster is started for the sharded-run test (scripts/slurm.sh; stopped by its PIDs
# when the tests end); then every Rust unit and integration test runs. In release: the tests
# run the binary on real pixels and train models, and the build is the one
# `cargo build --release` made. The Python package is built first, from the same build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# qemu-x86_64 runs the binary as CPUs without AVX-512, AVX2 or SSSE3 (tests/it/cpus.rs);
# libjpeg-turbo's cjpeg writes the arithmetic-coded JPEG of tests/python/decode_corpus.py.
missing=""
if [ "$(uname -m)" = x86_64 ] && ! command -v qemu-x86_64 > /dev/null; then missing="qemu-user"; fi
if ! command -v cjpeg > /dev/null; then missing="$missing libjpeg-turbo-progs"; fi
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing > /dev/null
fi
# The Python package (python/), installed as README says into a venv that also sees the
# packages above; tests/it/python.rs runs its checks with that interpreter.
python3 -m venv --system-site-packages target/python-env
target/python-env/bin/pip install --quiet --disable-pip-version-check ./python
export PIPELINE_PYTHON="$PWD/target/python-env/bin/python"
slurm=$(mktemp -d)
trap 'scripts/slurm.sh stop "$slurm"; rm -rf "$slurm"' EXIT
scripts/slurm.sh start "$slurm"
SLURM_CONF="$slurm/slurm.conf" cargo test --release --all-targets "$@"
