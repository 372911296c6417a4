#!/usr/bin/env bash
# Docs and comments stand alone: nothing in the tracked tree points at documents that are not
# in the repository (design notes, paper digests, performance notes, issue numbers), every
# docs/NAME.md that is mentioned exists, and every "docs/NAME.md §N" names a section that
# the file has.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."

self=tests/test_docs.sh
# Files to search: the tracked tree (the working copy of each file), or everything but build
# output and the corpora when this is not a git checkout.
search() {   # search EXTENDED_REGEX -> file:line:text
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git grep -nIE "$1" -- . ":!$self"
    else
        grep -rnIE --exclude-dir=.git --exclude-dir='build*' --exclude-dir=data --exclude-dir=node \
            --exclude-dir=runs "$1" . | sed 's|^\./||' | grep -v "^$self:"
    fi
}

n=0 failed=0
result() {   # result WHAT FINDINGS
    n=$((n + 1))
    if [ -z "$2" ]; then echo "ok $n - $1"; return; fi
    failed=$((failed + 1))
    echo "not ok $n - $1"
    printf '%s\n' "$2" | sed 's/^/#   /'
}

echo "1..3"

outside='DESIGN ?§|DESIGN\.md|PAPERS(\.md)?|PERF\.md|DATA\.md|ANCHORS(\.md)?|\b[Ii]ssue [0-9]+'
result "no references to documents outside the repository (file:line below)" "$(search "$outside" | cut -c1-160)"

missing=""
while IFS= read -r doc; do
    [ -f "$doc" ] || missing+="$doc: mentioned in $(search "$doc" | cut -d: -f1,2 | head -3 | tr '\n' ' ')"$'\n'
done < <(search 'docs/[A-Za-z0-9_-]+\.md' | grep -oE 'docs/[A-Za-z0-9_-]+\.md' | sort -u)
result "every docs/NAME.md mentioned exists" "${missing%$'\n'}"

sections=""
while IFS= read -r ref; do     # docs/NAME.md §N.M, with or without backquotes around the path
    doc="$(printf '%s' "$ref" | grep -oE 'docs/[A-Za-z0-9_-]+\.md')" num="${ref##*§}"
    [ -f "$doc" ] || continue   # reported above
    grep -qE "^#+ ${num//./\\.}\.? " "$doc" || sections+="$doc §$num: no such section"$'\n'
done < <(search 'docs/[A-Za-z0-9_-]+\.md`? ?§[0-9]+(\.[0-9]+)*' |
         grep -oE 'docs/[A-Za-z0-9_-]+\.md`? ?§[0-9]+(\.[0-9]+)*' | sed 's/`//' | sort -u)
result "every docs/NAME.md §N names a section of that file" "${sections%$'\n'}"

[ "$failed" -eq 0 ]
