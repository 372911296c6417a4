"""Read a compressed SWORD commentary module (zCom / zCom4) without libsword.

A module directory holds, per testament (ot, nt), three files whose extension starts with
'b' (BlockType=BOOK) or 'c' (BlockType=CHAPTER):
  *.?zs  block index: per block 3 little-endian uint32 (offset, compressed size, size)
  *.?zz  the blocks, each a zlib stream
  *.?zv  verse index (block, offset, size) per verse slot; not needed to read the text
The blocks hold the entries' OSIS XML in canonical order, so decompressing the blocks in
index order gives the whole text once. OSIS <chapter sID=...> milestones start documents;
the tags are stripped, paragraphs become lines.
"""
import html
import os
import re
import struct
import zlib

CHAPTER = re.compile(r"<chapter\b[^>]*\bsID=[^>]*>")
BREAK = re.compile(r"<(?:div\b[^>]*type=\"x-p\"[^>]*|/?title\b[^>]*|/?row\b[^>]*|/?l\b[^>]*"
                   r"|lb\b[^>]*|/?item\b[^>]*|/?lg\b[^>]*|/?list\b[^>]*|/?p\b[^>]*)>")
CELL = re.compile(r"</cell>\s*<cell\b[^>]*>")
TAG = re.compile(r"<[^>]*>")
C1 = re.compile("[\u0080-\u009f\ufeff]")


def read_blocks(moddir):
    """Decompressed blocks of a module directory, OT then NT, as one str."""
    parts = []
    for testament in ("ot", "nt"):
        for kind in ("b", "c"):
            idx = os.path.join(moddir, "%s.%szs" % (testament, kind))
            dat = os.path.join(moddir, "%s.%szz" % (testament, kind))
            if os.path.exists(idx) and os.path.exists(dat):
                break
        else:
            continue
        with open(idx, "rb") as f:
            index = f.read()
        with open(dat, "rb") as f:
            data = f.read()
        for i in range(0, len(index) - len(index) % 12, 12):
            off, csize, size = struct.unpack_from("<III", index, i)
            if csize == 0:
                continue
            block = zlib.decompress(data[off:off + csize])
            if len(block) != size:
                raise ValueError("%s: block %d: expected %d bytes, got %d"
                                 % (dat, i // 12, size, len(block)))
            parts.append(block.decode("utf-8", "replace"))
    if not parts:
        raise ValueError("%s: no SWORD zCom index (*.bzs/*.czs) found" % moddir)
    return "".join(parts)


def osis_to_text(osis):
    t = CELL.sub(" ", osis)
    t = BREAK.sub("\n", t)
    t = TAG.sub("", t)
    t = html.unescape(t)
    t = C1.sub("", t).replace("\u00a0", " ").replace("\u202f", " ")
    lines = (" ".join(ln.split()) for ln in t.split("\n"))
    return "\n".join(ln for ln in lines if ln)


def documents(moddir):
    """The module's text split at chapter starts, tags stripped, a paragraph a line."""
    osis = read_blocks(moddir)
    docs = []
    for piece in CHAPTER.split(osis):
        text = osis_to_text(piece)
        if text:
            docs.append(text)
    return docs
