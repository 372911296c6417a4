#!/usr/bin/env bash
# test_torch.sh — kiln's whole model against an independent PyTorch implementation:
# ref_driver writes kiln's checkpoint, losses, gradients and 3 AdamW steps, once per MLP
# activation; torch_ref.py reproduces them with python3-torch and prints TAP. Skipped (visibly) where torch is absent.
set -u
PY=/usr/bin/python3
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "1..0 # SKIP python3-torch not installed"
    exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${KILN_BUILD:-}" ] && [ -x "$KILN_BUILD/ref_driver" ]; then
    driver=$KILN_BUILD/ref_driver
elif command -v ref_driver >/dev/null 2>&1; then
    driver=$(command -v ref_driver)
else
    driver=$here/../../build/ref_driver
fi
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-ref.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Both MLP activations: GPT-2's tanh GELU (the default) and the exact erf GELU.
for act in gelu_tanh gelu; do
    mkdir -p "$tmp/$act"
    if ! out=$("$driver" "$tmp/$act" "$act" 2>&1); then
        echo "not ok 1 - ref_driver ($driver) ran with activation $act"
        printf '%s\n' "$out" | sed 's/^/# /'
        echo "1..1"
        exit 1
    fi
    printf '%s\n' "$out" | sed 's/^/# /'
done
"$PY" "$here/torch_ref.py" "$tmp/gelu_tanh" "$tmp/gelu"
