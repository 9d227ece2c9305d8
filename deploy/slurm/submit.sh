#!/usr/bin/env bash
# usage: deploy/slurm/submit.sh PIPELINE_FILE SHARDS [sbatch options...]
# Queues SHARDS shard tasks as one array job, then the merge job, which starts only when every
# task has succeeded (afterok). Prints the two job ids. The shared cache and the AWS variables
# are taken from the environment (sbatch exports it to the jobs).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 PIPELINE_FILE SHARDS [sbatch options...]" >&2; exit 2; }
file=$1 shards=$2; shift 2
case $shards in ''|*[!0-9]*|0) echo "SHARDS must be a whole number above 0, not '$shards'" >&2; exit 2;; esac
here=$(cd "$(dirname "$0")" && pwd)
export PIPELINE=$file
array=$(sbatch --parsable --array="0-$((shards - 1))" "$@" "$here/shard.sbatch")
merge=$(sbatch --parsable --dependency="afterok:${array%%;*}" "$@" "$here/merge.sbatch")
echo "shards: job $array (tasks 0-$((shards - 1))), merge: job $merge"
