#!/usr/bin/env bash
# The fresh-machine path of the Makefile, without a fresh machine: a pkg-config that knows
# no library until a stub install step has run stands first on PATH, and `make demo` (with
# a small build and a trivial run in a temporary build directory) must succeed in one go;
# without the install step, make must stop with one line naming what is missing.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Run as if from a shell, not as a sub-make of `make test` (its flags would leak in).
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES WERROR SANITIZE MPI   # command-line variables are exported too

n=0 failed=0
ok()   { n=$((n + 1)); echo "ok $n - $1"; }
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

real_pkg_config="$(command -v pkg-config)" || { echo "1..0 # SKIP pkg-config not installed"; exit 0; }

mkdir -p "$tmp/bin"
cat > "$tmp/bin/pkg-config" <<EOF
#!/bin/sh
# Knows nothing until the stub install step has run.
[ -f "$tmp/installed" ] || exit 1
exec "$real_pkg_config" "\$@"
EOF
cat > "$tmp/install-deps" <<EOF
#!/bin/sh
echo "stub install-deps: pretending to install"
touch "$tmp/installed"
EOF
chmod +x "$tmp/bin/pkg-config" "$tmp/install-deps"
export PATH="$tmp/bin:$PATH"

echo "1..12"

# 1. No libraries: a compile stops at once with one line, not a compiler error.
out="$(make -C "$repo" --no-print-directory BUILD="$tmp/b1" OPT=-O0 "$tmp/b1/lua/main.o" 2>&1)"; rc=$?
check "without the libraries make fails" test "$rc" -ne 0
lines="$(printf '%s\n' "$out" | grep -c .)"
check "... with one line (got $lines)" test "$lines" -eq 1
if printf '%s' "$out" | grep -q 'missing libraries (pkg-config lua5.4 openblas .*libpcre2-8; Debian liblua5.4-dev libopenblas-dev .*libpcre2-dev): run `make deps`'; then
    ok "... naming the pkg-config and Debian packages and make deps"
else
    fail "... naming the pkg-config and Debian packages and make deps" "$out"
fi
check "... and nothing was compiled" test ! -e "$tmp/b1/lua/main.o"

# 2. No pkg-config at all: the same kind of line.
out="$(make -C "$repo" --no-print-directory BUILD="$tmp/b1" PKG_CONFIG="$tmp/no-such-pkg-config" all 2>&1)"
if [ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] && printf '%s' "$out" | grep -q 'no-such-pkg-config not found: .*run `make deps`'; then
    ok "without pkg-config: one line naming it and make deps"
else
    fail "without pkg-config: one line naming it and make deps" "$out"
fi

# 3. make demo installs first and builds in the same invocation (a small target, a trivial run).
out="$(make -C "$repo" --no-print-directory BUILD="$tmp/b2" OPT=-O0 INSTALL_DEPS="$tmp/install-deps" \
       DEMO_BUILD="$tmp/b2/lua/main.o $tmp/b2/core/kn.o" DEMO_DATA= DEMO_RUN="echo demo-ran" demo 2>&1)"; rc=$?
if [ "$rc" -eq 0 ] && [ -s "$tmp/b2/lua/main.o" ] && [ -s "$tmp/b2/core/kn.o" ]; then
    ok "make demo on a fresh machine: installs, then builds, in one go"
else
    fail "make demo on a fresh machine: installs, then builds, in one go" "exit $rc" "$out"
fi
check "... and runs the demo" grep -q '^demo-ran$' <<<"$out"

# 4. -Werror for tests and sanitizer builds, not for a user's plain make.
cmd() { make -C "$repo" --no-print-directory -n BUILD="$tmp/b3" "$@" "$tmp/b3/core/kn.o" 2>&1 | grep -- '-c core/kn.c'; }
if ! cmd | grep -q -- -Werror && cmd WERROR=1 | grep -q -- -Werror && cmd SANITIZE=1 | grep -q -- -Werror; then
    ok "-Werror with WERROR=1 and SANITIZE=1, not in a plain make"
else
    fail "-Werror with WERROR=1 and SANITIZE=1, not in a plain make" "plain: $(cmd)" "WERROR=1: $(cmd WERROR=1)"
fi
if make -C "$repo" --no-print-directory -n BUILD="$tmp/b3" test 2>&1 | grep -- '-c core/kn.c' | grep -q -- -Werror; then
    ok "make test compiles with -Werror"
else
    fail "make test compiles with -Werror"
fi

# 5. install-deps without network (--check only): a virtual package counts as present when an
# installed package provides it (awk, provided by mawk or gawk), and npm references count
# when their package.json in the node folder has the listed version.
mkdir -p "$tmp/node/node_modules/fakepkg"
printf 'awk  provided-by-mawk  build  a virtual package\nnpm:fakepkg@1.2.3  test  an npm reference\n' > "$tmp/packages.txt"
printf '{\n  "name": "fakepkg",\n  "version": "1.2.3"\n}\n' > "$tmp/node/node_modules/fakepkg/package.json"
deps() { KILN_PACKAGES="$tmp/packages.txt" KILN_NODE_DIR="$tmp/node" third_party/install-deps --check "$@" 2>&1; }
out="$(deps)"; rc=$?
if [ "$rc" -eq 0 ]; then ok "install-deps: provided virtual package and present npm reference"
else fail "install-deps: provided virtual package and present npm reference" "$out"; fi
printf '{"name": "fakepkg", "version": "1.2.2"}\n' > "$tmp/node/node_modules/fakepkg/package.json"
out="$(deps)"; rc=$?
if [ "$rc" -ne 0 ] && grep -q 'npm references missing from .*: fakepkg@1.2.3' <<<"$out"; then
    ok "install-deps: an npm reference of another version is missing"
else
    fail "install-deps: an npm reference of another version is missing" "exit $rc" "$out"
fi
out="$(deps --no-test)"; rc=$?
if [ "$rc" -eq 0 ]; then ok "install-deps --no-test skips the npm references"
else fail "install-deps --no-test skips the npm references" "$out"; fi

[ "$failed" -eq 0 ]
