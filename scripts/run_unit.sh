#!/usr/bin/env bash
# Runs every C unit-test binary, prints each one's cmocka report, and a
# closing "N passed, N failed" line counting test binaries.
set -u
build=$1; shift
pass=0; fail=0; failed=()
for t in "$@"; do
    if LEMONPC_BUILD="$build" "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed+=("$t"); fi
done
[ ${#failed[@]} -eq 0 ] || printf 'FAILED: %s\n' "${failed[@]}"
echo "unit ($build): $pass passed, $fail failed"
[ "$fail" -eq 0 ]
