#!/usr/bin/env bash
# Runs the whole test suite: starts the local brokers, runs every test project of Messaging.sln
# (the shared conformance suite against every transport, plus contract tests), writes
# conformance-tests/LEDGER.md, and ends with one line: "N passed, N failed[, N skipped]".
#
# Transports whose broker is unreachable are skipped on a laptop; set MESSAGING_CONFORMANCE_REQUIRE=all
# (CI does) to make them fail instead.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${MESSAGING_SKIP_BROKERS:-}" != "1" ]; then
  bash conformance-tests/brokers.sh || { echo "brokers could not be started"; echo "0 passed, 1 failed"; exit 1; }
fi

results="artifacts/test-results"
rm -rf "$results"
dotnet test Messaging.sln --logger "trx;LogFilePrefix=results" --logger "console;verbosity=normal" --results-directory "$results"
status=$?

passed=0; failed=0; skipped=0
shopt -s nullglob
trx_files=("$results"/*.trx)
for trx in "${trx_files[@]}"; do
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  get() { echo "$counters" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]\+' || echo 0; }
  passed=$((passed + $(get passed)))
  failed=$((failed + $(get failed) + $(get error) + $(get timeout) + $(get aborted)))
  skipped=$((skipped + $(get notExecuted)))
done
if [ ${#trx_files[@]} -eq 0 ]; then
  failed=$((failed + 1))
  echo "no test results were written"
fi
if [ $status -ne 0 ] && [ $failed -eq 0 ]; then
  failed=1 # the build or the runner failed before reporting
fi

if [ $skipped -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ $failed -eq 0 ] && [ $status -eq 0 ]
