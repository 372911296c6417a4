#!/usr/bin/env bash
# tests/bench/gen.sh — generation tokens/s: kiln's key/value-cache decoder (m:generate)
# against nanoGPT's sample.py loop in PyTorch (a full forward per new token, context cropped
# to block_size). Not part of `make test`.
#
#   tests/bench/gen.sh [path/to/kiln]
#
# For each (config, threads) it runs kiln and PyTorch alternately, each in a fresh process
# timing one generation after one untimed warm-up, GEN_REPEATS times, and prints a markdown
# table of the medians. The prompt is one token; GEN_NEW tokens follow (255 fills a
# 256-token context exactly; more than block_size - 1 measures the sliding context, where
# both re-run block_size tokens for every new one).
#
# Environment:
#   GEN_CONFIGS  configs (default "M"; S, M, L as in tests/bench/run, or "layers,d,heads,T")
#   GEN_THREADS  thread counts (default "1 2")
#   GEN_NEW      new tokens per generation (default 255)
#   GEN_REPEATS  interleaved kiln/PyTorch runs per cell (default 3)
#   GEN_LOG      file for the per-run log (default: discarded)
set -u
here=$(cd "$(dirname "$0")" && pwd)
KILN=${1:-${KILN_BUILD:-$here/../../build}/kiln}
CONFIGS=${GEN_CONFIGS:-M}
THREADS=${GEN_THREADS:-1 2}
NEW=${GEN_NEW:-255}
REPEATS=${GEN_REPEATS:-3}
LOG=${GEN_LOG:-/dev/null}
PY=/usr/bin/python3
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}

[ -x "$KILN" ] || { echo "gen.sh: $KILN not found (make)" >&2; exit 1; }
torch_ok=0
"$PY" -c 'import torch' >/dev/null 2>&1 && torch_ok=1
[ $torch_ok = 1 ] || echo "gen.sh: python3-torch missing: kiln only" >&2
preload=
[ -r "$TCMALLOC" ] && preload=$TCMALLOC

field() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" <<<"$2"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "| cfg | threads | new tokens | kiln tok/s | PyTorch tok/s | ratio | kiln runs | PyTorch runs |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for cfg in $CONFIGS; do
    for thr in $THREADS; do
        k_all=; t_all=
        for ((r = 1; r <= REPEATS; r++)); do
            echo "gen.sh: $cfg threads $thr run $r: kiln" >&2
            out=$(KILN_THREADS=$thr "$KILN" "$here/gen.lua" "$cfg" "$thr" "$NEW" 1 2>>"$LOG" | tail -n 1)
            echo "  $out" >&2
            k_all+=" $(field tok_s "$out")"
            if [ $torch_ok = 1 ]; then
                echo "gen.sh: $cfg threads $thr run $r: PyTorch" >&2
                out=$(LD_PRELOAD=$preload OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4 \
                      OMP_NUM_THREADS=$thr OPENBLAS_NUM_THREADS=$thr \
                      "$PY" "$here/gen_torch.py" "$cfg" "$thr" "$NEW" 1 2>>"$LOG" | tail -n 1)
                echo "  $out" >&2
                t_all+=" $(field tok_s "$out")"
            fi
        done
        kt=$(median <<<"$k_all"); tt=$(median <<<"$t_all")
        ratio=n/a
        [ -n "$kt" ] && [ -n "$tt" ] && ratio=$(awk -v a="$kt" -v b="$tt" 'BEGIN {printf "%.1f", a / b}')
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$cfg" "$thr" "$NEW" "${kt:-failed}" \
            "${tt:-n/a}" "$ratio" "$(echo $k_all | tr ' ' '/')" "$(echo $t_all | tr ' ' '/')"
    done
done
