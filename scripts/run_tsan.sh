#!/usr/bin/env bash
# `make tsan` / `make tsan-runtime` (argument `runtime`): the threaded C
# tests built with ThreadSanitizer (build-tsan/): the pool and the runner, or
# test_api's threaded tests (the real model, ~10x slower under TSan). A data
# race, a lock-order inversion or a use of a destroyed mutex is a report,
# and any report fails the run (halt_on_error).
set -u
cd "$(dirname "$0")/.."
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
b=build-tsan/tests
fail=0
run() {
    echo "== tsan: $*"
    if ! env LEMONPC_BUILD=build-tsan "$@"; then echo "FAILED (tsan): $*"; fail=1; fi
}
if [ "${1:-}" = runtime ]; then
    run env CMOCKA_FILTER='*_match_alone' $b/test_api
    run env CMOCKA_FILTER='test_cancel_from_another_thread' $b/test_api
else
    run $b/test_pool
    run $b/test_runner
fi
[ "$fail" -eq 0 ] && echo "tsan: no reports"
exit "$fail"
