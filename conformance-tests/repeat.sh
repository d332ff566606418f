#!/usr/bin/env bash
# Runs README's test command (conformance-tests/run.sh) N times in a row and says which tests failed in which run.
#   bash conformance-tests/repeat.sh 10
# Each run's results stay in artifacts/repeat/run-K (trx files and the console log). Ends with one line:
# "N of N runs passed". Set MESSAGING_CONFORMANCE_REQUIRE=all to make a missing broker a failure, as CI does.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
case "$runs" in ''|*[!0-9]*) echo "usage: repeat.sh N (a number of runs)"; exit 2 ;; esac

out="artifacts/repeat"
rm -rf "$out"
mkdir -p "$out"
green=0
report=()
for k in $(seq 1 "$runs"); do
  dir="$out/run-$k"
  mkdir -p "$dir"
  started=$(date +%s)
  bash conformance-tests/run.sh > "$dir/console.log" 2>&1
  status=$?
  seconds=$(( $(date +%s) - started ))
  cp artifacts/test-results/*.trx "$dir/" 2>/dev/null
  summary=$(tail -n 1 "$dir/console.log")
  # Every test whose outcome is not Passed (or NotExecuted), by name, from the trx files of this run.
  failures=$(cat "$dir"/*.trx 2>/dev/null | tr '\n' ' ' | grep -o '<UnitTestResult [^>]*>' \
    | grep -v 'outcome="Passed"' | grep -v 'outcome="NotExecuted"' | grep -o 'testName="[^"]*"' | sed 's/testName="\(.*\)"/\1/' | sort -u)
  if [ "$status" -eq 0 ]; then
    green=$((green + 1))
    line="run $k: $summary (${seconds} s)"
  else
    line="run $k: FAILED: $summary (${seconds} s)"
  fi
  echo "$line"
  report+=("$line")
  if [ -n "$failures" ]; then
    while IFS= read -r name; do
      echo "  failed: $name"
      report+=("  failed: $name")
    done <<< "$failures"
  fi
done
printf '%s\n' "${report[@]}" > "$out/summary.txt"
echo "$green of $runs runs passed" | tee -a "$out/summary.txt"
[ "$green" -eq "$runs" ]
