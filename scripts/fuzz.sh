#!/usr/bin/env bash
# Fuzzes every parser: builds each fuzz/fuzz_<name>.c as a libFuzzer target
# (clang, ASan + UBSan) against all library sources (src/*/*.c but src/cli),
# seeds it (fuzz/corpus/<name>/ files and/or the output of a generator
# fuzz/seed_<name>.c run as `seed_<name> DIR`), and runs each target for
# SECONDS / number-of-targets (at least 10 s). Fails on any crash, leak or
# sanitizer report; the reproducer lands in build-fuzz/artifacts/.
#   usage: scripts/fuzz.sh [SECONDS]      (make fuzz FUZZ_SECONDS=N)
# Optional per target: fuzz/<name>.dict (libFuzzer dictionary).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CC=${FUZZ_CC:-clang}
out=build-fuzz
libs=$(make -s --no-print-directory -f Makefile --eval 'print-libs: ; @echo $(LIBS)' print-libs)
cflags="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Isrc -Iinclude -g -O1 \
 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"

command -v "$CC" >/dev/null || { echo "fuzz: $CC not found (install clang)" >&2; exit 1; }
targets=(fuzz/fuzz_*.c)
[ -e "${targets[0]}" ] || { echo "fuzz: no fuzz/fuzz_*.c targets" >&2; exit 1; }

# Library objects, instrumented for coverage; rebuilt when the source changes.
mkdir -p "$out/obj" "$out/artifacts"
objs=()
for src in src/*/*.c; do
    case "$src" in src/cli/*) continue ;; esac
    obj="$out/obj/${src//\//_}.o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find src include -name '*.h' -newer "$obj" -print -quit)" ]; then
        # A file clang cannot compile is left out with a warning: targets
        # that do not need it still run; those that do fail at link time.
        if ! $CC $cflags -fsanitize=fuzzer-no-link -c "$src" -o "$obj" 2>"$out/obj/cc.log"; then
            echo "fuzz: WARNING: $src does not compile with $CC, left out:" >&2
            head -5 "$out/obj/cc.log" >&2
            rm -f "$obj"
            continue
        fi
    fi
    objs+=("$obj")
done
rm -f "$out/liblemonpc-fuzz.a"
ar rcs "$out/liblemonpc-fuzz.a" "${objs[@]}"

per=$(( seconds / ${#targets[@]} ))
[ "$per" -ge 10 ] || per=10
failed=()
for t in "${targets[@]}"; do
    name=$(basename "$t" .c); name=${name#fuzz_}
    exe="$out/fuzz_$name"
    $CC $cflags -fsanitize=fuzzer "$t" "$out/liblemonpc-fuzz.a" $libs -o "$exe"
    corpus="$out/corpus/$name"
    mkdir -p "$corpus"
    if [ -d "fuzz/corpus/$name" ]; then cp -n fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null || true; fi
    if [ -f "fuzz/seed_$name.c" ]; then
        $CC $cflags "fuzz/seed_$name.c" "$out/liblemonpc-fuzz.a" $libs -o "$out/seed_$name"
        "$out/seed_$name" "$corpus"
    fi
    dict=()
    [ -f "fuzz/$name.dict" ] && dict=("-dict=fuzz/$name.dict")
    echo "fuzz: $name for ${per}s ($(ls "$corpus" | wc -l) seeds)"
    if ! "$exe" "$corpus" "${dict[@]}" -max_total_time="$per" -max_len=8192 -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" \
            >"$out/fuzz_$name.log" 2>&1; then
        tail -40 "$out/fuzz_$name.log" >&2
        failed+=("$name")
    else
        grep -E '^(stat::number_of_executed_units|Done)' "$out/fuzz_$name.log" || tail -2 "$out/fuzz_$name.log"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (reproducers in $out/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${per}s each, no crashes"
