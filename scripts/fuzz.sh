#!/usr/bin/env bash
# Fuzzes every parser: builds each fuzz/fuzz_<name>.c as a libFuzzer target
# (clang, ASan + UBSan) against all library sources (src/*/*.c but src/cli),
# seeds it (fuzz/corpus/<name>/ files and/or the output of a generator
# fuzz/seed_<name>.c run as `seed_<name> DIR`), and runs each target for
# SECONDS / number-of-targets (at least 10 s). Fails on any crash, leak or
# sanitizer report; the reproducer lands in build-fuzz/artifacts/.
#   usage: scripts/fuzz.sh [SECONDS]      (make fuzz FUZZ_SECONDS=N)
#          scripts/fuzz.sh --smoke [S]    (part of `make test`)
# --smoke: each target replays its seeds, then makes S x 1000 inputs from
# a fixed seed (default S 2) and those seeds alone (not the corpus earlier
# runs grew): the same inputs on every machine and run, so `make test`
# passes or fails the same way everywhere (exploring is `make fuzz`'s job);
# about a minute once built.
# FUZZ_ONLY="name ..." limits either mode to those targets.
# Optional per target: fuzz/<name>.dict (libFuzzer dictionary).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
seconds=${1:-60}
[ "$smoke" = 1 ] && seconds=${1:-2}
CC=${FUZZ_CC:-clang}
out=build-fuzz
libs=$(make -s --no-print-directory -f Makefile --eval 'print-libs: ; @echo $(LIBS)' print-libs)
cflags="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Isrc -Iinclude -g -O1 \
 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
# The SIMD kernel files are no parsers, and under ASan clang takes minutes
# over each of them: they go in plain (-O2, no sanitizer, no coverage), which
# links into the instrumented targets; ASan checks them in `make unit-san`.
kflags="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Isrc -Iinclude -g -O2"

command -v "$CC" >/dev/null || { echo "fuzz: $CC not found (install clang)" >&2; exit 1; }
targets=()
for t in fuzz/fuzz_*.c; do
    name=$(basename "$t" .c); name=${name#fuzz_}
    if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $name "* ]]; then continue; fi
    targets+=("$t")
done
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no fuzz/fuzz_*.c targets${FUZZ_ONLY:+ named $FUZZ_ONLY}" >&2; exit 1; }

# Library objects, instrumented for coverage; rebuilt when the source
# changes, as many at once as there are CPUs. A file clang cannot compile is
# left out with a warning: targets that do not need it still run; those
# that do fail at link time.
mkdir -p "$out/obj" "$out/artifacts"
compile_one() {
    local src=$1 obj="$out/obj/${1//\//_}.o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find src include -name '*.h' -newer "$obj" -print -quit)" ]; then
        local f="$cflags -fsanitize=fuzzer-no-link"
        case "$src" in src/tensor/matmul_*.c|src/tensor/q4_0x8_*.c|src/train/tmm*_x86.c) f=$kflags ;; esac
        if ! $CC $f -c "$src" -o "$obj.tmp" 2>"$obj.log"; then
            echo "fuzz: WARNING: $src does not compile with $CC, left out:" >&2
            head -5 "$obj.log" >&2
            rm -f "$obj" "$obj.tmp"
            return 0
        fi
        mv "$obj.tmp" "$obj"
    fi
}
export -f compile_one
export CC cflags kflags out
srcs=()
for src in src/*/*.c; do
    case "$src" in src/cli/*) continue ;; esac
    srcs+=("$src")
done
printf '%s\n' "${srcs[@]}" | xargs -P "$(nproc 2>/dev/null || echo 2)" -I{} bash -c 'compile_one "$1"' _ {}
objs=()
for src in "${srcs[@]}"; do
    obj="$out/obj/${src//\//_}.o"
    [ -f "$obj" ] && objs+=("$obj")
done
rm -f "$out/liblemonpc-fuzz.a"
ar rcs "$out/liblemonpc-fuzz.a" "${objs[@]}"

per=$(( seconds / ${#targets[@]} ))
[ "$per" -ge 10 ] || per=10
[ "$smoke" = 1 ] && per=$seconds
failed=()
for t in "${targets[@]}"; do
    name=$(basename "$t" .c); name=${name#fuzz_}
    exe="$out/fuzz_$name"
    $CC $cflags -fsanitize=fuzzer "$t" "$out/liblemonpc-fuzz.a" $libs -o "$exe"
    corpus="$out/corpus/$name"
    [ "$smoke" = 1 ] && corpus="$out/smoke/$name" && rm -rf "$corpus"
    mkdir -p "$corpus"
    if [ -d "fuzz/corpus/$name" ]; then cp -n fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null || true; fi
    if [ -f "fuzz/seed_$name.c" ]; then
        $CC $cflags "fuzz/seed_$name.c" "$out/liblemonpc-fuzz.a" $libs -o "$out/seed_$name"
        "$out/seed_$name" "$corpus"
    fi
    dict=()
    [ -f "fuzz/$name.dict" ] && dict=("-dict=fuzz/$name.dict")
    if [ "$smoke" = 1 ]; then echo "fuzz: $name, $(( per * 1000 )) inputs from seed 1 ($(ls "$corpus" | wc -l) seeds)"
    else echo "fuzz: $name for ${per}s ($(ls "$corpus" | wc -l) seeds)"; fi
    limit=(-max_total_time="$per")
    [ "$smoke" = 1 ] && limit=(-seed=1 -runs=$(( per * 1000 )))
    if ! "$exe" "$corpus" "${dict[@]}" "${limit[@]}" -max_len=8192 -timeout=10 \
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
if [ "$smoke" = 1 ]; then echo "fuzz: ${#targets[@]} target(s), $(( per * 1000 )) inputs each from seed 1, no crashes"; else echo "fuzz: ${#targets[@]} target(s) ran ${per}s each, no crashes"; fi
