#!/usr/bin/env bash
# Plants one fault at a time into pipelines/cats_dogs_small.yaml (the shipped photos, the
# diagnosis's fixed small CNN), trains it, runs every check of `pipeline diagnose`, and checks
# that the planted cause is the one ranked first (blocking, but for overfitting, which only
# makes training worse; unplanted, that nothing blocks). With `--verify`, each change is then
# trained without and with at two seeds: a case passes only when its change lowers the val
# loss by more than the seeds differ, the cause is no longer found and nothing blocks. The CI
# test (tests/it/diagnose.rs) runs three of these cases without the learning curve.
#
#   scripts/diagnose_cases.sh          # release build; a few minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${BENCH_NO_BUILD:-}" = 1 ] || cargo build --release --quiet
bin=target/release/pipeline
file=pipelines/cats_dogs_small.yaml
fail=0
# fault (the --set arguments) | the cause expected first ("" = nothing blocking)
while IFS='|' read -r fault want; do
  # shellcheck disable=SC2086
  "$bin" run "$file" $fault > /dev/null
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  json=$("$bin" diagnose "$file" $fault --json --verify 2> /dev/null)
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  # The verdict ranks what blocks first: its top cause, and whether anything blocks at all.
  first=$(jq -r '.verdict[0].cause // ""' <<< "$json")
  blocking=$(jq -r '.blocking' <<< "$json")
  change=$(jq -r '.verdict[0].changes[0] // ""' <<< "$json")
  verified=$(jq -r 'def r: if . == null then "diverged" else (. * 1000 | round / 1000) end;
    if .verify == null then "-" else .verify |
    "val loss \(.val_loss_before | r) -> \(.val_loss_after | r), seeds differ by \(.seed_spread | r); after: \(
      if .blocking_after == [] then "nothing blocking" else (.blocking_after | join(", ")) end)" end' <<< "$json")
  fixed=$(jq -r 'if .verify == null then "none" elif .verify.beyond_noise and .verify.cause_gone and .verify.blocking_after == [] then "yes" else "no" end' <<< "$json")
  if [ -z "$want" ]; then
    if [ "$blocking" = 0 ]; then verdict=ok; else verdict=FAIL; fail=1; fi
  elif [ "$first" = "$want" ] && [ "$fixed" = yes ]; then verdict=ok; else verdict=FAIL; fail=1; fi
  printf '%-4s %-45s first: %-22s change: %-28s (%.0f s)\n' "$verdict" "${fault:-(healthy)}" \
    "${first:-nothing}" "$change" "$secs"
  printf '       verify: %s\n' "$verified"
done <<'CASES'
|
--set train.l2=1|l2_too_strong
--set train.epochs=1|too_few_epochs
--set train.init=zeros|symmetric_weights
--set train.lr=0.5|learning_rate_too_high
--set train.lr=0.000001|learning_rate_too_low
--set train.augment=[] --set train.l2=0|overfitting
--set train.blocks=[2,2] --set train.hidden=[2]|model_too_small
--set mean_subtract.mean=[0,0,0] --set normalize.method=scale --set normalize.factor=1|input_scale
CASES
exit $fail
