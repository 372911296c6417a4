#!/usr/bin/env bash
# test_nanogpt.sh — kiln checkpoints in nanoGPT: nanogpt_kiln.lua trains and saves a small
# model per MLP activation with kiln and writes kiln's log-probabilities; nanogpt_check.py
# runs docs/formats.md's loading code on them against a module with nanoGPT's structure and
# prints TAP. Skipped (visibly) where torch is absent.
set -u
PY=/usr/bin/python3
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "1..0 # SKIP python3-torch not installed"
    exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -n "${KILN_BUILD:-}" ] && [ -x "$KILN_BUILD/kiln" ]; then
    kiln=$KILN_BUILD/kiln
else
    kiln=$root/build/kiln
fi
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-nanogpt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$root" || exit 1
if ! out=$("$kiln" tests/reference/nanogpt_kiln.lua "$tmp" 2>&1); then
    echo "not ok 1 - kiln ($kiln) trained and saved the models"
    printf '%s\n' "$out" | sed 's/^/# /'
    echo "1..1"
    exit 1
fi
printf '%s\n' "$out" | sed 's/^/# /'
"$PY" "$here/nanogpt_check.py" "$tmp" "$root/docs/formats.md"
