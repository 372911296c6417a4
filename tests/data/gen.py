#!/usr/bin/python3
"""Generate kiln's tiny test corpora, deterministically (no randomness from the platform).

    /usr/bin/python3 tests/data/gen.py          rewrite tiny_en.txt and tiny_other.txt here
    /usr/bin/python3 tests/data/gen.py --check  exit 1 if the committed files differ

tiny_en.txt     ~8 KiB of English-like technical prose: paragraphs of sentences built from
                templates and word lists written for kiln, hard-wrapped at 72 columns, ASCII.
tiny_other.txt  ~8 KiB of a clearly different distribution: short verse-like lines in
                four-line stanzas, mixed French/German-flavoured words and symbols, with
                non-ASCII UTF-8 (é, ü, ß, —, ∑, π, ∞, «»), a line per verse, no wrapping.
Both end with a newline; paragraphs and stanzas are separated by one blank line.
The outputs are committed, so tests never need Python.
"""
import os
import sys
import textwrap

TARGET = 8192


class Rng:
    """xorshift64*: the same sequence everywhere."""

    def __init__(self, seed):
        self.s = seed or 1

    def next(self):
        s = self.s
        s ^= (s >> 12)
        s ^= (s << 25) & 0xFFFFFFFFFFFFFFFF
        s ^= (s >> 27)
        self.s = s
        return (s * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF

    def below(self, n):
        return (self.next() >> 11) % n

    def pick(self, xs):
        return xs[self.below(len(xs))]


# --- English-like technical prose ---------------------------------------------------------

NOUNS = ["buffer", "scheduler", "allocator", "checkpoint", "tensor", "kernel", "queue",
         "gradient", "optimizer", "tokenizer", "cache", "worker thread", "config file",
         "training run", "loss curve", "batch", "layer", "matrix", "counter", "log file",
         "seed", "sampler", "validation set", "learning rate", "weight decay", "header",
         "index", "module", "parser", "interpreter"]
ADJS = ["small", "shared", "private", "aligned", "stale", "fresh", "sorted", "compressed",
        "deterministic", "lazy", "fixed", "temporary", "default", "global", "local",
        "read-only", "contiguous", "padded", "cached", "unused"]
VERBS = ["allocates", "frees", "reads", "writes", "checks", "updates", "resets", "copies",
         "flushes", "validates", "records", "loads", "saves", "scales", "clips", "splits",
         "merges", "reuses", "rejects", "reports"]
ADVS = ["quickly", "once", "twice", "safely", "eagerly", "lazily", "again", "in place",
        "in order", "at startup", "on exit", "per step", "per batch", "before use"]
CONNECT = ["However,", "In practice,", "By default,", "For example,", "Note that",
           "As a rule,", "In this case,", "Otherwise,", "When in doubt,", "Afterwards,"]
FUNCS = ["kiln_alloc()", "step()", "save_checkpoint()", "load()", "reset()", "eval()",
         "sample()", "flush()", "open_log()", "clip_grad()"]


def a(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def en_sentence(r):
    n1, n2 = r.pick(NOUNS), r.pick(NOUNS)
    t = r.below(8)
    if t == 0:
        s = "the %s %s %s %s" % (r.pick(ADJS), n1, r.pick(VERBS), a(r.pick(ADJS) + " " + n2))
    elif t == 1:
        s = "the function %s %s the %s %s" % (r.pick(FUNCS), r.pick(VERBS), n1, r.pick(ADVS))
    elif t == 2:
        s = "if the %s is %s, the %s %s it %s" % (n1, r.pick(ADJS), n2, r.pick(VERBS),
                                                  r.pick(ADVS))
    elif t == 3:
        s = "each %s keeps %d %s entries, so the %s stays %s" % (
            n1, 2 ** (1 + r.below(10)), r.pick(ADJS), n2, r.pick(ADJS))
    elif t == 4:
        s = "the %s must not outlive the %s that owns it" % (n1, n2)
    elif t == 5:
        s = "a %s of %d bytes fits in one page; larger ones are split" % (
            n1, 64 * (1 + r.below(60)))
    elif t == 6:
        s = "call %s before the %s %s the %s" % (r.pick(FUNCS), n1, r.pick(VERBS), n2)
    else:
        s = "the %s and the %s are %s by design" % (n1, n2, r.pick(ADJS))
    if r.below(4) == 0:
        c = r.pick(CONNECT)
        return c + " " + s + "."
    return s[0].upper() + s[1:] + "."


def en_paragraph(r):
    sents = [en_sentence(r) for _ in range(3 + r.below(4))]
    return textwrap.fill(" ".join(sents), width=72, break_on_hyphens=False)


def en_heading(r, k):
    title = "%d. The %s %s" % (k, r.pick(ADJS), r.pick(NOUNS))
    return title + "\n" + "-" * len(title)


def gen_en():
    r = Rng(0x6B696C6E)  # "kiln"
    parts, size, k = [], 0, 1
    while size < TARGET:
        if r.below(5) == 0 or not parts:
            p = en_heading(r, k)
            k += 1
        else:
            p = en_paragraph(r)
        parts.append(p)
        size += len(p.encode()) + 2
    return "\n\n".join(parts) + "\n"


# --- verse-like, non-ASCII ------------------------------------------------------------------

OPEN = ["Sous le ciel étoilé", "Über die Brücke", "Où la rivière dort", "Am Ufer, müde",
        "Dans la lumière pâle", "Wo der Schnee fällt", "Près du vieux moulin",
        "Im grünen Tal", "À l'aube d'été", "Über Felder und Höhen", "Près de la forêt",
        "Unter dem Mond"]
MIDDLE = ["chante l'oiseau", "weht der Wind", "tombe la pluie", "glänzt der Fluß",
          "s'éveille le cœur", "träumt das Mädchen", "danse la flamme", "schläft die Stadt",
          "rêve l'enfant", "blüht die Rose", "brille la mer", "ruht der Bär"]
CLOSE = ["— doucement", "— für immer", "— sans fin", "— ganz allein", "— à jamais",
         "— über alles", "— ô ciel", "— süß und still", "— comme hier", "— naïve et vraie"]
SYMBOLS = ["∑ des étoiles", "π fois le rêve", "∞ Wege", "√ der Zeit", "≈ un souffle",
           "∆ des saisons", "« encore »", "° kalt", "± ein Lied", "∏ der Tage"]


def cap(s):
    return s[0].upper() + s[1:]


def other_line(r):
    t = r.below(5)
    if t == 0:
        return "%s, %s %s" % (r.pick(OPEN), r.pick(MIDDLE), r.pick(CLOSE))
    if t == 1:
        return "%s %s" % (r.pick(OPEN), r.pick(CLOSE))
    if t == 2:
        return "%s, %s," % (cap(r.pick(MIDDLE)), r.pick(SYMBOLS))
    if t == 3:
        return "et %s, und %s." % (r.pick(MIDDLE), r.pick(MIDDLE))
    return "%s — %s!" % (cap(r.pick(SYMBOLS)), r.pick(MIDDLE))


def gen_other():
    r = Rng(0x76657273)  # "vers"
    parts, size, k = [], 0, 1
    while size < TARGET:
        if r.below(6) == 0 or not parts:
            p = "§ %s" % ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X",
                          "XI", "XII", "XIII", "XIV", "XV", "XVI"][(k - 1) % 16]
            k += 1
        else:
            p = "\n".join(other_line(r) for _ in range(4))
        parts.append(p)
        size += len(p.encode()) + 2
    return "\n\n".join(parts) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outputs = {"tiny_en.txt": gen_en(), "tiny_other.txt": gen_other()}
    check = "--check" in sys.argv[1:]
    bad = 0
    for name, text in outputs.items():
        path = os.path.join(here, name)
        data = text.encode("utf-8")
        if check:
            with open(path, "rb") as f:
                if f.read() != data:
                    print("gen.py: %s differs from what gen.py makes" % name)
                    bad = 1
            continue
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        print("gen.py: wrote %s (%d bytes)" % (name, len(data)))
    sys.exit(bad)


if __name__ == "__main__":
    main()
