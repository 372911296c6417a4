# kiln — build, test, demo, bench, install.
#   make                 build build/kiln, build/kiln.so, build/libkiln.a
#   make test            C tests, Lua tests, PyTorch reference checks (TAP under prove)
#   make test SANITIZE=1 the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make demo            install what is missing, build, run the main experiment
#   make deps            install the missing Debian packages (third_party/install-deps)
#   make bench           training throughput for configs S, M, L (and PyTorch where present)
#   make install PREFIX=/usr/local
#
# Warnings are errors (-Werror) in `make test`, SANITIZE=1 builds and CI (WERROR=1), and
# only warnings in a plain `make` / `make install`, so a newer compiler does not stop a
# user's build over a new warning.

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
ARCH     ?= -march=native
OPT      ?= -O3
PKG_CONFIG   ?= pkg-config
INSTALL_DEPS ?= third_party/install-deps

# pkg-config name -> the Debian package that provides it (third_party/packages.txt).
PKGS     := lua5.4 openblas yaml-0.1 libcjson cminpack libedit libpcre2-8
DEB_lua5.4     := liblua5.4-dev
DEB_openblas   := libopenblas-dev
DEB_yaml-0.1   := libyaml-dev
DEB_libcjson   := libcjson-dev
DEB_cminpack   := libcminpack-dev
DEB_libedit    := libedit-dev
DEB_libpcre2-8 := libpcre2-dev

# Goals that compile nothing here do not need the libraries: `make demo` installs them
# first and then builds in a fresh $(MAKE), which reads this file (and pkg-config) again.
NO_LIB_GOALS := deps demo data clean help
ifneq ($(filter-out $(NO_LIB_GOALS),$(or $(MAKECMDGOALS),all)),)
  ifeq ($(shell command -v $(PKG_CONFIG) 2>/dev/null),)
    $(error $(PKG_CONFIG) not found: kiln needs pkg-config and $(foreach p,$(PKGS),$(DEB_$(p))); run `make deps` (third_party/install-deps))
  endif
  PKG_MISSING := $(strip $(shell for p in $(PKGS); do $(PKG_CONFIG) --exists $$p || echo $$p; done))
  ifneq ($(PKG_MISSING),)
    $(error missing libraries (pkg-config $(PKG_MISSING); Debian $(foreach p,$(PKG_MISSING),$(DEB_$(p)))): run `make deps` (third_party/install-deps))
  endif
  PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS))
  PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS))
endif

# -Werror where warnings must not pass: tests, sanitizer builds, CI (`make WERROR=1`).
ifneq ($(filter 1,$(SANITIZE))$(filter test test-c test-lua test-ref,$(MAKECMDGOALS)),)
  WERROR ?= 1
endif
W_ERROR := $(if $(filter 1,$(WERROR)),-Werror)

# ISO C11 keeps fp-contract off: no silent FMA contraction, so results do not depend on
# which loops the compiler fuses. Never -ffast-math (GELU and softmax need exact IEEE).
CFLAGS   := -std=c11 -D_GNU_SOURCE -g $(OPT) $(ARCH) -fPIC -Wall -Wextra $(W_ERROR) \
            -Wno-unused-parameter -Icore $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS  := $(EXTRA_LDFLAGS)
LIBS     := $(PKG_LIBS) -lpthread -lm

ifeq ($(SANITIZE),1)
  BUILD   := build-san
  OPT     := -O1
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
  # OpenBLAS and Lua are not built with ASan; leaks inside them are not ours to report.
  export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0
  export LSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
endif

# make MPI=1: the same kiln compiled with mpicc and -DKILN_MPI into build-mpi/ (kiln.mpi
# talks to Open MPI there; the default build has no MPI dependency and one process).
ifeq ($(MPI),1)
  BUILD   := $(BUILD)-mpi
  CC      := mpicc
  CFLAGS  += -DKILN_MPI
endif

CORE_SRC := $(sort $(wildcard core/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
BIND_SRC := $(filter-out lua/main.c,$(sort $(wildcard lua/*.c)))
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/%.o)
LUA_LIB  := $(sort $(wildcard lua/kiln/*.lua lua/kiln/*/*.lua))
CTEST_SRC := $(sort $(wildcard tests/c/test_*.c))
CTEST_BIN := $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)

.PHONY: all test test-c test-lua test-ref demo bench data install clean deps fuzz help
all: $(BUILD)/kiln $(BUILD)/kiln.so $(CTEST_BIN)

$(BUILD)/%.o: %.c $(wildcard core/*.h lua/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ilua -c $< -o $@

$(BUILD)/libkiln.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The Lua library is compiled into the binary as strings (a module on KILN_PATH overrides).
$(BUILD)/embed: tools/embed.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O1 -Wall -Wextra $(W_ERROR) $< -o $@

$(BUILD)/embedded.c: $(BUILD)/embed $(LUA_LIB)
	$(BUILD)/embed lua $(LUA_LIB) > $@.tmp && mv $@.tmp $@

$(BUILD)/embedded.o: $(BUILD)/embedded.c lua/embedded.h
	$(CC) $(CFLAGS) -Ilua -c $< -o $@

# The docs too, for help() at the prompt (same tool, the table renamed knL_embedded_docs).
DOCS := $(sort $(wildcard docs/*.md))
$(BUILD)/docs.c: $(BUILD)/embed $(DOCS)
	$(BUILD)/embed docs $(DOCS) > $@.tmp && mv $@.tmp $@

$(BUILD)/docs.o: $(BUILD)/docs.c lua/embedded.h
	$(CC) $(CFLAGS) -Ilua -DknL_embedded_modules=knL_embedded_docs -c $< -o $@

$(BUILD)/kiln: $(BUILD)/lua/main.o $(BIND_OBJ) $(BUILD)/embedded.o $(BUILD)/docs.o $(BUILD)/libkiln.a
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

$(BUILD)/kiln.so: $(BIND_OBJ) $(BUILD)/embedded.o $(BUILD)/libkiln.a
	$(CC) -shared $(LDFLAGS) $^ $(filter-out -llua5.4,$(LIBS)) -o $@

$(BUILD)/tests/%: tests/c/%.c $(wildcard tests/c/*.h) $(BUILD)/libkiln.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libkiln.a $(LIBS) -o $@

# kernels.c picks its code paths by CPU features at compile time (AVX-512VL register tiles,
# AVX2 + FMA, portable C), so test_kernels also runs with kernels.c compiled for Haswell
# (AVX2 + FMA, no AVX-512) and for plain x86-64-v2, whatever this machine has.
# gemm.c likewise (AVX-512 6x32 register tile, AVX2 + FMA 6x16, portable C): test_gemm runs all three.
ifeq ($(shell uname -m),x86_64)
KERNEL_TESTS := $(BUILD)/tests/test_kernels-haswell $(BUILD)/tests/test_kernels-x86-64-v2 \
                $(BUILD)/tests/test_gemm-haswell $(BUILD)/tests/test_gemm-x86-64-v2
endif
.PRECIOUS: $(BUILD)/tests/kernels-%.o
$(BUILD)/tests/kernels-%.o: core/kernels.c $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(ARCH),$(CFLAGS)) -march=$* -c $< -o $@

$(BUILD)/tests/test_kernels-%: tests/c/test_kernels.c $(BUILD)/tests/kernels-%.o $(wildcard tests/c/*.h) $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/tests/kernels-$*.o $(BUILD)/libkiln.a $(LIBS) -o $@

.PRECIOUS: $(BUILD)/tests/gemm-%.o
$(BUILD)/tests/gemm-%.o: core/gemm.c $(wildcard core/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(ARCH),$(CFLAGS)) -march=$* -c $< -o $@

$(BUILD)/tests/test_gemm-%: tests/c/test_gemm.c $(BUILD)/tests/gemm-%.o $(wildcard tests/c/*.h) $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/tests/gemm-$*.o $(BUILD)/libkiln.a $(LIBS) -o $@

# Determinism tests fix the thread count themselves; the reference check needs Debian's
# python3 (with python3-torch), not a virtualenv's.
TEST_ENV := PATH=$(CURDIR)/$(BUILD):$$PATH KILN_BUILD=$(CURDIR)/$(BUILD) KILN_SANITIZE=$(SANITIZE) \
            OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE:-Haswell}

# `make test` also builds the MPI variant when mpicc is here, for tests/lua/test_mpi.lua
# (which skips, saying why, without it).
ifeq ($(filter 1,$(MPI) $(SANITIZE)),)
ifneq ($(shell command -v mpicc 2>/dev/null),)
TEST_MPI := mpi-variant
endif
endif
.PHONY: mpi-variant
mpi-variant:
	+$(MAKE) --no-print-directory MPI=1 WERROR=$(WERROR) $(BUILD)-mpi/kiln $(BUILD)-mpi/kiln.so

test: all $(BUILD)/ref_driver $(KERNEL_TESTS) $(TEST_MPI)
	$(TEST_ENV) prove --timer $(CTEST_BIN) $(KERNEL_TESTS) $(sort $(wildcard tests/lua/test_*.lua)) \
	    $(sort $(wildcard tests/reference/test_*.sh)) $(sort $(wildcard tests/*.sh))

test-c: all $(KERNEL_TESTS)
	$(TEST_ENV) prove --timer $(CTEST_BIN) $(KERNEL_TESTS)

test-lua: all
	$(TEST_ENV) prove --timer $(sort $(wildcard tests/lua/test_*.lua))

test-ref: all $(BUILD)/ref_driver
	$(TEST_ENV) prove --timer $(sort $(wildcard tests/reference/test_*.sh))

# The kiln side of the PyTorch reference check (tests/reference/test_torch.sh runs it).
$(BUILD)/ref_driver: tests/reference/ref_driver.c $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libkiln.a $(LIBS) -o $@

$(BUILD)/bench: tests/bench/bench.c tests/bench/timing.h $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libkiln.a $(LIBS) -o $@

# The fused attention alone (forward and backward GFLOP/s at S/M/L shapes); not run by make test.
$(BUILD)/attn_bench: tests/bench/attn.c tests/bench/timing.h $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libkiln.a $(LIBS) -o $@

# kn_gemm against OpenBLAS at the linear layers' shapes (1 thread); not run by make test.
$(BUILD)/gemm_bench: tests/bench/gemm.c tests/bench/timing.h $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libkiln.a $(LIBS) -o $@

bench: all $(BUILD)/bench $(BUILD)/attn_bench
	tests/bench/run $(BUILD)/bench

deps:
	$(INSTALL_DEPS)

# The main job: the quick re-weighting ablation on real text (make data first if needed).
# Packages first, then a fresh $(MAKE) for the build, so its compiler flags come from the
# libraries just installed. DEMO_BUILD, DEMO_DATA and DEMO_RUN let tests/test_fresh.sh
# walk the same path with a small build and a trivial run.
DEMO_BUILD ?= all
DEMO_DATA  ?= data/techdocs/train.txt data/austen/val.txt
DEMO_RUN   ?= $(BUILD)/kiln experiments/reweighting.lua quick=true
demo:
	$(INSTALL_DEPS)
	+$(MAKE) --no-print-directory $(DEMO_BUILD)
	@for f in $(DEMO_DATA); do test -f "$$f" || { $(MAKE) --no-print-directory data; break; }; done
	$(DEMO_RUN)

data:
	tools/make-data

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/lua/5.4 $(DESTDIR)$(PREFIX)/include/kiln $(DESTDIR)$(PREFIX)/lib
	install -m 755 $(BUILD)/kiln $(DESTDIR)$(PREFIX)/bin/kiln
	install -m 755 $(BUILD)/kiln.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/kiln.so
	install -m 644 $(BUILD)/libkiln.a $(DESTDIR)$(PREFIX)/lib/libkiln.a
	install -m 644 core/*.h $(DESTDIR)$(PREFIX)/include/kiln/

# libFuzzer target for the checkpoint reader: needs clang; not part of `make test`.
#   make fuzz [FUZZ_TIME=60]
FUZZ_TIME ?= 60
build-fuzz/fuzz_ckpt: tests/fuzz/fuzz_ckpt.c core/ckpt.c core/fsio.c core/kn.c core/ckpt.h core/fsio.h core/kn.h
	@mkdir -p $(dir $@)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Icore $(PKG_CFLAGS) \
	    tests/fuzz/fuzz_ckpt.c core/ckpt.c core/fsio.c core/kn.c $(PKG_LIBS) -lm -o $@

fuzz: build-fuzz/fuzz_ckpt
	@mkdir -p build-fuzz/corpus-ckpt
	build-fuzz/fuzz_ckpt -max_total_time=$(FUZZ_TIME) -dict=tests/fuzz/ckpt.dict build-fuzz/corpus-ckpt tests/fuzz/seeds-ckpt

clean:
	rm -rf build build-san build-fuzz build-mpi

help:
	@sed -n '2,/^$$/p' Makefile | sed 's/^# \{0,1\}//'
