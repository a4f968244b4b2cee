#!/usr/bin/env bash
# A CI resilience gate on the build machine itself (chaosmem's local backend: real memory cgroups).
#
#   examples/ci/resilience-gate.sh [EXPERIMENT.json ...]     (default: experiments/local-oom.json)
#
# Runs each experiment with `chaos run`, renders one HTML report over all of them, and exits with
# `chaosmem gate`'s strict verdict (non-zero unless every experiment passed), writing JUnit XML for
# the CI's test view. Whatever happens, `chaosmem rollback` undoes anything a run left changed.
# Needs root (or a delegated cgroup subtree) to write cgroup files. Environment:
#   REPORTS   where the report, JUnit and journals go       (default: reports/gate)
#   VENV      the virtualenv with chaosmem (`make setup`)    (default: .venv)
#   CHAOSMEM_STATE_DIR  the restore ledger                   (default: .state/gate)
set -euo pipefail

reports=${REPORTS:-reports/gate}
bin=${VENV:-.venv}/bin
state=${CHAOSMEM_STATE_DIR:-$PWD/.state/gate}
export CHAOSMEM_STATE_DIR=$state
mkdir -p "$reports"
trap '"$bin/chaosmem" rollback --state-dir "$state" || true' EXIT

journals=()
for experiment in "${@:-experiments/local-oom.json}"; do
  name=$(basename "$experiment" .json)
  journal=$reports/$name-journal.json
  rm -f "$journal"  # the report describes this run, never an earlier one
  echo "::group::chaos run $experiment" >&2
  # chaos run exits non-zero on a deviation: the gate below decides, with stricter rules.
  "$bin/chaos" --no-version-check --log-file "$reports/$name.log" run \
    --journal-path "$journal" "$experiment" || true
  echo "::endgroup::" >&2
  journals+=("$journal")
done

"$bin/chaosmem" report "${journals[@]}" -o "$reports/report.html"
"$bin/chaosmem" report "${journals[@]}" -o "$reports/report.md"
"$bin/chaosmem" gate "${journals[@]}" --junit "$reports/junit.xml"
