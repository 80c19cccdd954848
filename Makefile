# LeMoNPC build. `make` builds build/lemonpc, and the runtime a game links
# (build/liblemonpc.so and build/liblemonpc.a: include/lemonpc.h only);
# `make install PREFIX=...` installs those with lemonpc.pc;
# `make test` runs the C unit tests (plain and under ASan+UBSan), the
# threaded ones under ThreadSanitizer, a smoke run of every fuzz target, the
# oracle tests (llama.cpp / PyTorch through Python), the integration tests and
# the slow ones; `make fuzz` fuzzes every parser for a bounded time; `make
# bench` and the bench-* targets run the benchmarks (BENCHMARKS.md).

CC       ?= cc
CSTD      = -std=c11 -D_GNU_SOURCE
WARN      = -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
INCLUDES  = -Isrc -Iinclude
OPT      ?= -O2 -g
# libmicrohttpd: `lemonpc serve` only (src/server, kept out of RT_SRC).
LIBS      = -lpcre2-8 -ljansson -lpng -lzip -lcurl -lsqlite3 -lmicrohttpd -lm -lpthread
TEST_LIBS = -lcmocka

# Sanitizer variants of everything live in their own trees: SAN=1 is
# ASan+UBSan, SAN=thread ThreadSanitizer.
ifeq ($(SAN),1)
BUILD    ?= build-san
OPT       = -O1 -g -fno-omit-frame-pointer
SANFLAGS  = -fsanitize=address,undefined -fno-sanitize-recover=undefined
else ifeq ($(SAN),thread)
BUILD    ?= build-tsan
OPT       = -O1 -g -fno-omit-frame-pointer
SANFLAGS  = -fsanitize=thread
else
BUILD    ?= build
SANFLAGS  =
endif

# -fPIC: the runtime's objects also go into liblemonpc.so; hidden: only
# what include/lemonpc.h marks LEMONPC_API is exported from it.
CFLAGS_ALL = $(CSTD) $(WARN) $(INCLUDES) $(OPT) $(SANFLAGS) -fPIC -fvisibility=hidden -MMD -MP \
             $(CFLAGS)
LDFLAGS_ALL = $(SANFLAGS) $(LDFLAGS)

LIB_SRC  = $(sort $(wildcard src/*/*.c))
CLI_SRC  = $(sort $(wildcard src/cli/*.c))
LIB_SRC := $(filter-out $(CLI_SRC),$(LIB_SRC))
TEST_SRC = $(sort $(wildcard tests/test_*.c))
TOOL_SRC = $(sort $(wildcard tests/tools/*.c))
BENCH_SRC = $(sort $(wildcard bench/*.c))

LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
# The runtime a game links: the engine, the tokenizer, sheets (not the card
# importers: no libpng/libzip/jansson), world memory, the text checks the
# reply guard runs (src/check) and the public API.
# Needs only PCRE2 and SQLite.
RT_SRC   = $(filter-out src/sheet/card_%,$(sort $(wildcard src/base/*.c src/tensor/*.c \
             src/gguf/*.c src/model/*.c src/tokenizer/*.c src/sheet/*.c src/memory/*.c src/runtime/*.c \
             src/check/*.c)))
RT_OBJ   = $(RT_SRC:%.c=$(BUILD)/%.o)
RT_LIBS  = -lpcre2-8 -lsqlite3 -lm -lpthread
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TOOL_BIN = $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib test unit unit-san oracle oracle-torch fuzz bench demo model clean install
all: $(BUILD)/lemonpc $(TOOL_BIN) lib $(BUILD)/examples/tavern

lib: $(BUILD)/liblemonpc.a $(BUILD)/liblemonpc.so

# Objects are rebuilt when the compile flags change (the stamp's content).
FLAGS_STAMP = $(BUILD)/.cflags
$(shell mkdir -p $(BUILD); echo '$(CFLAGS_ALL)' | cmp -s - $(FLAGS_STAMP) || \
        echo '$(CFLAGS_ALL)' > $(FLAGS_STAMP))

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# Everything but the CLI, for the CLI, the tests, the tools and benchmarks.
$(BUILD)/liblemonpc_all.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# What a game links, static or shared.
$(BUILD)/liblemonpc.a: $(RT_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

SONAME = liblemonpc.so.$(shell sed -n 's/^\#define LEMONPC_VERSION_MAJOR //p' include/lemonpc.h)
$(BUILD)/liblemonpc.so: $(RT_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $(LDFLAGS_ALL) $^ $(RT_LIBS) -o $@

PREFIX ?= /usr/local
VERSION = $(shell sed -n 's/^\#define LEMONPC_VERSION "\(.*\)"/\1/p' include/lemonpc.h)

install: $(BUILD)/lemonpc lib
	@test -n "$(PREFIX)" || { echo "make install: PREFIX is empty" >&2; exit 1; }
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/lemonpc $(DESTDIR)$(PREFIX)/bin/lemonpc
	install -m 644 include/lemonpc.h $(DESTDIR)$(PREFIX)/include/lemonpc.h
	install -m 644 $(BUILD)/liblemonpc.a $(DESTDIR)$(PREFIX)/lib/liblemonpc.a
	install -m 755 $(BUILD)/liblemonpc.so $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/liblemonpc.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' lemonpc.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/lemonpc.pc

# The example game (examples/tavern): linked like a game links, against the
# runtime archive and the public header alone.
.PHONY: tavern
tavern: $(BUILD)/examples/tavern
$(BUILD)/examples/tavern: examples/tavern/tavern.c include/lemonpc.h $(BUILD)/liblemonpc.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -Iinclude $(OPT) $(SANFLAGS) $< $(LDFLAGS_ALL) $(BUILD)/liblemonpc.a \
	    $(RT_LIBS) -o $@

$(BUILD)/lemonpc: $(CLI_OBJ) $(BUILD)/liblemonpc_all.a
	$(CC) $(LDFLAGS_ALL) $^ $(LIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/liblemonpc_all.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) $^ $(LIBS) $(TEST_LIBS) -o $@

$(BUILD)/tools/%: $(BUILD)/tests/tools/%.o $(BUILD)/liblemonpc_all.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) $^ $(LIBS) -o $@

# Benchmarks: bench/<name>.c -> build/bench/<name>.
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/liblemonpc_all.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) $^ $(LIBS) -o $@

# Everything the tests run, built in parallel before any test starts.
.PHONY: build-tests
build-tests: $(TEST_BIN) $(BUILD)/lemonpc $(TOOL_BIN)

# C unit tests; each test binary is a cmocka group.
unit: build-tests
	@scripts/run_unit.sh $(BUILD) $(TEST_BIN)

unit-san:
	@$(MAKE) --no-print-directory SAN=1 unit

# ThreadSanitizer (SAN=thread, its own tree build-tsan/). `make tsan`, part
# of `make test`: the thread pool and the datagen runner (seconds).
# `make tsan-runtime`: the runtime's conversations on one model from several
# threads at once (two NPCs round after round, four conversations, a cancel
# from another thread) against the same replies alone; the real model under
# TSan takes minutes. `make tsan-serve`: the server's concurrency tests.
.PHONY: tsan tsan-runtime build-tsan-tests tsan-serve
build-tsan-tests:
	@$(MAKE) --no-print-directory SAN=thread build-tsan/tests/test_pool build-tsan/tests/test_runner

tsan: build-tsan-tests
	@scripts/run_tsan.sh

tsan-runtime:
	@$(MAKE) --no-print-directory SAN=thread build-tsan/tests/test_api
	@scripts/run_tsan.sh runtime

# The server's concurrency tests against a ThreadSanitizer build of lemonpc.
tsan-serve:
	@$(MAKE) --no-print-directory SAN=thread build-tsan/lemonpc
	LEMONPC_BUILD=build-tsan TSAN_OPTIONS="halt_on_error=1" \
	    python3 -m pytest -q tests/integration/test_serve.py -k "concurrent or cancels"

# Oracle tests: our numbers against llama.cpp (llama-cpp-python) and PyTorch,
# with the avx2 kernel set against tests/requirements.txt's AVX2 build of
# llama.cpp (scripts/install_test_deps.sh). The avx512 set has its own
# target below (oracle-avx512).
oracle: all
	LEMONPC_KERNELS=avx2 python3 -m pytest -q -rs tests/oracle

# The parity tests again for the avx512 kernel set, against llama.cpp built
# for AVX-512 (a second llama.cpp build: minutes on an idle machine, far
# more on a busy one), where the CPU has AVX-512. Not in `make test`, to keep
# it well under 30 minutes; the unit tests check the avx512 set against the
# avx2 set and a double-precision reference on every AVX-512 host.
.PHONY: oracle-avx512
oracle-avx512: all
	scripts/oracle_avx512.sh

# Gradient oracle: the C trainer against PyTorch (Debian's python3-torch,
# hence /usr/bin/python3 rather than whatever python3 is first on PATH). Each
# reference is checked under every kernel set this CPU runs (avx512, avx2,
# scalar; LEMONPC_KERNELS=<set> checks one), --precision bf16 too.
oracle-torch: all
	/usr/bin/python3 -m pytest -q -rs tests/torch

# Integration tests (tests/integration): the CLI's messages and commands, the
# teacher runner against a fake OpenAI-compatible server, the server on the
# real model, the install script, the module layout HACKING.md states.
.PHONY: integration
integration: all
	python3 -m pytest -q -rs tests/integration

# The same against the ASan+UBSan build (build-san/: lemonpc, the tools).
# Not in `make test`: the servers on the real model under ASan take many
# minutes on 2 cores.
.PHONY: integration-san
integration-san:
	@$(MAKE) --no-print-directory SAN=1 build-tests
	LEMONPC_BUILD=build-san python3 -m pytest -q -rs tests/integration

# PEFT interop: our PEFT folder under peft/transformers (a venv on Debian's
# torch, built once into the cache by scripts/setup_peft_venv.sh).
.PHONY: oracle-peft
oracle-peft: all
	"$$(scripts/setup_peft_venv.sh)" -m pytest -q -rs tests/peft

# The README's test command: installs what the tests need (Debian packages,
# the Python oracles, the model; nothing when all are there), builds both
# variants in parallel, then runs
# every suite one after the other (their outputs stay readable).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test:
	@scripts/install_test_deps.sh
	@$(MAKE) --no-print-directory -j$(JOBS) build-tests
	@$(MAKE) --no-print-directory -j$(JOBS) SAN=1 build-tests
	@$(MAKE) --no-print-directory -j$(JOBS) build-tsan-tests
	@$(MAKE) --no-print-directory unit unit-san tsan fuzz-smoke oracle oracle-torch oracle-peft integration test-slow

# Slow end-to-end checks (minutes on 2 cores): fine-tunes the real model.
# Part of `make test`; runnable alone.
.PHONY: test-slow
test-slow: all
	LEMONPC_SLOW=1 python3 -m pytest -q tests/oracle/test_train_stop.py tests/oracle/test_train_bf16.py

model:
	scripts/fetch_model.sh

demo:
	scripts/demo.sh

# Rebuilds Orlando from examples/luminara/data and regenerates the report in
# examples/luminara/report (about two hours on 2 cores; ONLY=lora: the
# shipped adapter alone, about half an hour).
.PHONY: orlando
orlando:
	scripts/orlando.sh

FUZZ_SECONDS ?= 60
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# Part of `make test`: every fuzz target replays its seeds and fuzzes a few
# seconds more (about a minute once the instrumented library is built).
.PHONY: fuzz-smoke
FUZZ_SMOKE_SECONDS ?= 2
fuzz-smoke:
	@scripts/fuzz.sh --smoke $(FUZZ_SMOKE_SECONDS)

# Speed and memory against the reference a user would pick (BENCHMARKS.md).
bench: all $(BENCH_BIN)
	python3 bench/bench_infer.py

# Kernel micro-benchmark: pool overhead, memory bandwidth, matvec/matmul per
# weight type, kernel set and thread count (BENCH_ARGS="--quick" etc.).
.PHONY: bench-kernels
bench-kernels: $(BUILD)/bench/bench_kernels
	$(BUILD)/bench/bench_kernels $(BENCH_ARGS)

# Training: our trainer against a plain PyTorch loop (SmolLM2-135M, seq 256,
# batch 8, full and LoRA); BENCH_ARGS e.g. "--threads 2 --steps 3".
.PHONY: bench-train
bench-train: $(BUILD)/bench/train_step $(BUILD)/lemonpc
	@scripts/install_deps.sh --bench
	python3 bench/bench_train.py $(BENCH_ARGS)

# DPO: lemonpc train --dpo against TRL's DPOTrainer (the same pairs, token
# ids, batch, sequence cap and threads; LoRA r16); BENCH_ARGS e.g. "--threads 2".
.PHONY: bench-dpo
bench-dpo: $(BUILD)/lemonpc $(BUILD)/tools/lm_sft_dump
	@scripts/install_deps.sh --bench
	python3 bench/bench_dpo.py $(BENCH_ARGS)

# The runtime a game links (include/lemonpc.h) against llama.cpp: time to
# first token with the persona cached, decode with conversations at once,
# peak RSS of 1/10/50 NPCs with adapters (minutes; BENCH_ARGS="--quick": a
# smoke run of about a minute).
.PHONY: bench-runtime
bench-runtime: $(BUILD)/lemonpc $(BUILD)/tools/lm_make_adapter $(BUILD)/bench/runtime \
               $(BUILD)/bench/prompt_tokens
	python3 bench/bench_runtime.py $(BENCH_ARGS)

# `lemonpc serve` under load from another process against llama-cpp-python's
# server (llama-server): same model, requests and threads; latency
# percentiles, throughput, RSS over the run (a few minutes;
# BENCH_ARGS="--quick": a smoke run).
.PHONY: bench-serve
bench-serve: $(BUILD)/lemonpc $(BUILD)/bench/prompt_tokens
	python3 bench/bench_serve.py $(BENCH_ARGS)

clean:
	rm -rf build build-san build-tsan build-fuzz

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d) $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/tools/%.d) \
         $(BENCH_BIN:=.d)
