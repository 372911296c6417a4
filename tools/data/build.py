#!/usr/bin/python3
"""Build one kiln corpus from Debian packages already extracted with `dpkg-deb -x`.

    build.py NAME --root DIR --out DATADIR [--sep blank|rs]

DIR holds one folder per package (DIR/linux-doc-6.1/usr/..., ...). Writes
DATADIR/NAME/train.txt and val.txt (and, for austen, DATADIR/austen_unwrapped/ too),
each first as *.tmp, renamed when complete. Run by tools/make-data; see docs/data.md.

Split: the corpus's source documents, in sorted order, numbered from 0; every 20th
(i % 20 == 19) goes to val.txt, the rest to train.txt. Documents are separated by a blank
line (--sep blank, the default) or by a line holding only the byte 0x1E (--sep rs).
"""
import argparse
import glob
import gzip
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import html2text  # noqa: E402
import rdata  # noqa: E402
import rst  # noqa: E402
import sword  # noqa: E402

VAL_EVERY = 20
SEPARATORS = {"blank": "\n", "rs": "\x1e\n"}


def normalize(doc):
    """Strip trailing blanks, at most one blank line in a row, none at either end."""
    lines = [ln.rstrip() for ln in doc.replace("\r\n", "\n").split("\n")]
    out, blank = [], False
    for ln in lines:
        if not ln:
            blank = bool(out)
            continue
        if blank:
            out.append("")
            blank = False
        out.append(ln)
    return "\n".join(out)


def write_split(docs, outdir, sep):
    os.makedirs(outdir, exist_ok=True)
    paths = {k: os.path.join(outdir, k + ".txt") for k in ("train", "val")}
    files = {k: open(p + ".tmp", "w", encoding="utf-8", newline="\n") for k, p in paths.items()}
    counts = {"train": [0, 0], "val": [0, 0]}
    i = 0
    for doc in docs:
        doc = normalize(doc)
        if not doc:
            continue
        k = "val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"
        i += 1
        f = files[k]
        if counts[k][0]:
            f.write(SEPARATORS[sep])
        f.write(doc + "\n")
        counts[k][0] += 1
        counts[k][1] += len(doc.encode("utf-8")) + 1
    for f in files.values():
        f.close()
    for k, p in paths.items():
        os.replace(p + ".tmp", p)
    print("  %s: %d documents; train %d docs %.2f MB, val %d docs %.2f MB"
          % (outdir, i, counts["train"][0], os.path.getsize(paths["train"]) / 1e6,
             counts["val"][0], os.path.getsize(paths["val"]) / 1e6), flush=True)


def pkgdir(root, pkg):
    d = os.path.join(root, pkg)
    if not os.path.isdir(d):
        sys.exit("build.py: package %s is not extracted under %s" % (pkg, root))
    return d


def read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def files(base, pattern, exclude=None):
    found = sorted(glob.glob(os.path.join(base, pattern), recursive=True))
    if exclude:
        found = [p for p in found if not exclude.search(os.path.relpath(p, base))]
    if not found:
        sys.exit("build.py: no files match %s under %s" % (pattern, base))
    return found


# --- corpora ---------------------------------------------------------------------------

def techdocs(root):
    kdoc = glob.glob(os.path.join(pkgdir(root, "linux-doc-6.1"),
                                  "usr/share/doc/linux-doc-*/Documentation"))
    if not kdoc:
        sys.exit("build.py: linux-doc: no Documentation folder")
    for p in files(kdoc[0], "**/*.rst.gz", re.compile(r"(^|/)translations/")):
        yield rst.clean(read_text(p))
    pdoc = glob.glob(os.path.join(pkgdir(root, "python3.11-doc"),
                                  "usr/share/doc/python3*/html/_sources"))
    if not pdoc:
        sys.exit("build.py: python3.11-doc: no html/_sources folder")
    for p in files(pdoc[0], "**/*.rst.txt"):
        yield rst.clean(read_text(p))


def techdocs2(root):
    pg = os.path.join(pkgdir(root, "postgresql-doc-15"), "usr/share/doc/postgresql-doc-15/html")
    for p in files(pg, "*.html"):
        yield html2text.html_to_text(read_text(p))
    sq = os.path.join(pkgdir(root, "sqlite3-doc"), "usr/share/doc/sqlite3")
    for p in files(sq, "**/*.html"):
        yield html2text.html_to_text(read_text(p))
    for p in files(pkgdir(root, "perl-doc"), "**/*.pod"):
        yield read_text(p)


VERSE = re.compile(r"^\s+\d+ (.*)$")


def kjv(root):
    prog = os.path.join(pkgdir(root, "bible-kjv"), "usr/bin/bible")
    datadir = os.path.join(pkgdir(root, "bible-kjv-text"), "usr/lib")
    try:
        res = subprocess.run([prog, "-p", datadir, "-l100000", "gen1:1-rev22:21"],
                             stdin=subprocess.DEVNULL, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        sys.exit("build.py: running bible-kjv's `bible` program failed: %s %s\n"
                 "  (it needs libreadline8: apt-get install libreadline8)"
                 % (e, err.decode(errors="replace").strip()))
    text = res.stdout.decode("utf-8", "replace")
    doc = []
    for line in text.split("\n"):
        m = VERSE.match(line)
        if m:
            doc.append(m.group(1).strip())
        elif line.strip():
            if doc:
                yield "\n".join(doc)
            doc = [line.strip()]  # chapter heading, e.g. "Genesis 1"
    if doc:
        yield "\n".join(doc)


def prose(root):
    n = 0
    for doc in kjv(root):
        n += 1
        yield doc
    if n < 1000:
        sys.exit("build.py: the bible program printed only %d chapters" % n)
    for pkg, mod in (("sword-comm-mhcc", "mhcc"), ("sword-comm-tdavid", "tdavid")):
        d = os.path.join(pkgdir(root, pkg), "usr/share/sword/modules/comments/zcom", mod)
        yield from sword.documents(d)


CHAPTER = re.compile(r"^(CHAPTER|Chapter) [0-9IVXLC]+\b")
NOVELS = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
          "sensesensibility"]


def austen_chapters(root):
    base = glob.glob(os.path.join(pkgdir(root, "r-cran-janeaustenr"),
                                  "usr/lib/R/site-library/janeaustenr/data"))
    if not base:
        sys.exit("build.py: r-cran-janeaustenr: no data folder")
    vecs = rdata.character_vectors(os.path.join(base[0], "Rdata.rdb"),
                                   os.path.join(base[0], "Rdata.rdx"))
    missing = [n for n in NOVELS if n not in vecs]
    if missing:
        sys.exit("build.py: janeaustenr data lacks %s" % ", ".join(missing))
    for name in NOVELS:
        doc = []
        for line in vecs[name]:
            line = line or ""
            if CHAPTER.match(line) and any(x.strip() for x in doc):
                yield doc
                doc = []
            doc.append(line)
        if doc:
            yield doc


def austen(root):
    for lines in austen_chapters(root):
        yield "\n".join(lines)


def unwrap(lines):
    paras, cur = [], []
    for ln in lines + [""]:
        if ln.strip():
            cur.append(ln.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    return "\n".join(paras)


def austen_unwrapped(root):
    for lines in austen_chapters(root):
        yield unwrap(lines)


CORPORA = {"techdocs": techdocs, "techdocs2": techdocs2, "prose": prose, "austen": austen,
           "austen_unwrapped": austen_unwrapped}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(CORPORA))
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sep", choices=sorted(SEPARATORS), default="blank")
    a = ap.parse_args()
    write_split(CORPORA[a.name](a.root), os.path.join(a.out, a.name), a.sep)


if __name__ == "__main__":
    main()
