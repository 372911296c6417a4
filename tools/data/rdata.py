"""A small reader for R's serialization format (XDR, versions 2 and 3) and for R lazy-load
databases (Rdata.rdb + Rdata.rdx), enough to pull character vectors out of a package's data
without R. Standard library only.

An .rdx file is a gzip- or zlib-compressed serialized list with an element `variables`: for
each object, c(offset, length) into the .rdb file. Each .rdb record is a 4-byte big-endian
uncompressed length followed by a zlib stream (R's compression type 1) holding one serialized
object. Type 2 (bzip2) and 3 (xz) records start with a '2'/'Z'/'0' byte after the length and
are handled too.
"""
import bz2
import gzip
import lzma
import struct
import zlib

NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 9, 10, 13, 14, 15, 16, 17
VECSXP, EXPRSXP, RAWSXP, S4SXP = 19, 20, 24, 25
ALTREP_SXP, ATTRLISTSXP, ATTRLANGSXP = 238, 239, 240
BASEENV_SXP, EMPTYENV_SXP = 241, 242
GENERICREFSXP, CLASSREFSXP, PERSISTSXP, PACKAGESXP, NAMESPACESXP = 245, 246, 247, 248, 249
BASENAMESPACE_SXP, MISSINGARG_SXP, UNBOUNDVALUE_SXP, GLOBALENV_SXP = 250, 251, 252, 253
NILVALUE_SXP, REFSXP = 254, 255

NA_INT = -2147483648


class RObject:
    """A value with R attributes: .value is the Python value, .attrs a dict (name -> value)."""

    def __init__(self, sexptype, value, attrs=None):
        self.type = sexptype
        self.value = value
        self.attrs = attrs or {}

    def __repr__(self):
        return "RObject(type=%d, value=%r, attrs=%r)" % (self.type, self.value, self.attrs)


class Special:
    """A singleton such as R_NilValue or R_GlobalEnv, or a persistent/namespace reference."""

    def __init__(self, name, detail=None):
        self.name = name
        self.detail = detail

    def __repr__(self):
        return "<%s%s>" % (self.name, "" if self.detail is None else " %r" % (self.detail,))


NIL = Special("NULL")


class Reader:
    def __init__(self, data):
        self.d = data
        self.p = 0
        self.refs = []
        self.encoding = "utf-8"

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("R serialization: truncated input")
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two ints, upper and lower 32 bits
            hi, lo = struct.unpack(">II", self.take(8))
            n = (hi << 32) | lo
        return n

    def header(self):
        fmt = self.take(2)
        if fmt != b"X\n":
            raise ValueError("R serialization: only the XDR format is supported, got %r" % fmt)
        version = self.int()
        self.int()  # writer's R version
        self.int()  # minimal reader version
        if version == 3:
            n = self.int()
            enc = self.take(n).decode("ascii", "replace")
            self.encoding = {"UTF-8": "utf-8", "latin1": "latin-1"}.get(enc, "utf-8")
        elif version != 2:
            raise ValueError("R serialization: unknown version %d" % version)

    def string_vec(self):
        if self.int() != 0:
            raise ValueError("R serialization: bad string vector")
        return [self.item() for _ in range(self.int())]

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        levels = flags >> 12

        if t == NILVALUE_SXP:
            return NIL
        if t in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
                 MISSINGARG_SXP, BASENAMESPACE_SXP):
            return Special({EMPTYENV_SXP: "emptyenv", BASEENV_SXP: "baseenv",
                            GLOBALENV_SXP: "globalenv", UNBOUNDVALUE_SXP: "unbound",
                            MISSINGARG_SXP: "missing", BASENAMESPACE_SXP: "base"}[t])
        if t == REFSXP:
            i = flags >> 8
            if i == 0:
                i = self.int()
            return self.refs[i - 1]
        if t in (PERSISTSXP, NAMESPACESXP, PACKAGESXP):
            s = Special({PERSISTSXP: "persist", NAMESPACESXP: "namespace",
                         PACKAGESXP: "package"}[t], self.string_vec())
            self.refs.append(s)
            return s
        if t == SYMSXP:
            name = self.item()
            sym = Special("symbol", name.value if isinstance(name, RObject) else name)
            self.refs.append(sym)
            return sym
        if t == ENVSXP:
            env = RObject(ENVSXP, {})
            self.refs.append(env)
            self.int()  # locked
            env.value = {"enclos": self.item(), "frame": self.item(), "hashtab": self.item()}
            attr = self.item()
            if attr is not NIL:
                env.attrs = pairlist_dict(attr)
            return env
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLISTSXP, ATTRLANGSXP):
            # A pairlist: read iteratively along the CDR to keep recursion shallow.
            cells = []
            while True:
                attrs = pairlist_dict(self.item()) if has_attr else {}
                tag = self.item() if has_tag else None
                car = self.item()
                cells.append((tag.detail if isinstance(tag, Special) else tag, car, attrs))
                nflags = struct.unpack_from(">i", self.d, self.p)[0]
                nt = nflags & 0xFF
                if nt == t and t in (LISTSXP, ATTRLISTSXP, LANGSXP, ATTRLANGSXP):
                    self.p += 4
                    has_attr = bool(nflags & (1 << 9))
                    has_tag = bool(nflags & (1 << 10))
                    continue
                cdr = self.item()
                break
            return RObject(t, {"cells": cells, "cdr": cdr})
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.take(n)
            # levels: 1<<3 UTF-8, 1<<2 latin1, 1<<6 ASCII; otherwise the native encoding
            if levels & (1 << 2):
                return raw.decode("latin-1")
            if levels & (1 << 1):  # bytes
                return raw
            return raw.decode("utf-8" if levels & ((1 << 3) | (1 << 6)) else self.encoding,
                              "replace")
        if t == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            return self.altrep(info, state, attr)

        if t in (LGLSXP, INTSXP):
            n = self.length()
            v = list(struct.unpack(">%di" % n, self.take(4 * n)))
        elif t == REALSXP:
            n = self.length()
            v = list(struct.unpack(">%dd" % n, self.take(8 * n)))
        elif t == CPLXSXP:
            n = self.length()
            f = struct.unpack(">%dd" % (2 * n), self.take(16 * n))
            v = [complex(f[i], f[i + 1]) for i in range(0, 2 * n, 2)]
        elif t == RAWSXP:
            v = self.take(self.length())
        elif t in (STRSXP, VECSXP, EXPRSXP):
            v = [self.item() for _ in range(self.length())]
        elif t == S4SXP:
            v = None
        else:
            raise ValueError("R serialization: unsupported SEXP type %d" % t)
        attrs = pairlist_dict(self.item()) if has_attr else {}
        return RObject(t, v, attrs)

    def altrep(self, info, state, attr):
        cls = info.value["cells"][0][1].detail if isinstance(info, RObject) else None
        attrs = pairlist_dict(attr) if attr is not NIL else {}
        if cls == "compact_intseq":
            n, start, step = state.value
            return RObject(INTSXP, [int(start + i * step) for i in range(int(n))], attrs)
        if cls == "compact_realseq":
            n, start, step = state.value
            return RObject(REALSXP, [start + i * step for i in range(int(n))], attrs)
        if cls in ("wrap_integer", "wrap_real", "wrap_string", "wrap_logical", "wrap_list",
                   "wrap_complex", "wrap_raw"):
            inner = state.value[0]
            inner.attrs = attrs or inner.attrs
            return inner
        if cls == "deferred_string":
            # state is a pairlist (original vector, scalar-format info); convert numbers.
            orig = state.value["cells"][0][1]
            return RObject(STRSXP, [None if x == NA_INT else str(x) for x in orig.value], attrs)
        raise ValueError("R serialization: unsupported ALTREP class %r" % cls)


def pairlist_dict(obj):
    if obj is NIL or obj is None:
        return {}
    out = {}
    for tag, car, _ in obj.value["cells"]:
        out[tag] = car
    return out


def unserialize(data):
    r = Reader(data)
    r.header()
    return r.item()


def decompress_record(rec):
    """One .rdb record: 4-byte big-endian length, then zlib (or typed bzip2/xz/none) data."""
    n = struct.unpack(">I", rec[:4])[0]
    body = rec[4:]
    if body[:1] == b"Z":  # type 3: xz
        out = lzma.decompress(body[1:])
    elif body[:1] == b"2":  # types 2 and 3: bzip2
        out = bz2.decompress(body[1:])
    elif body[:1] == b"0":  # types 2 and 3: stored
        out = body[1:]
    else:
        out = zlib.decompress(body)
    if len(out) != n:
        raise ValueError("lazy-load record: expected %d bytes, got %d" % (n, len(out)))
    return out


def read_index(rdx_bytes):
    if rdx_bytes[:2] == b"\x1f\x8b":
        raw = gzip.decompress(rdx_bytes)
    else:
        raw = decompress_record(rdx_bytes)
    idx = unserialize(raw)
    names = idx.attrs["names"].value
    parts = dict(zip(names, idx.value))
    variables = parts["variables"]
    return {k: tuple(int(x) for x in v.value)
            for k, v in zip(variables.attrs["names"].value, variables.value)}


def load_lazy_db(rdb_path, rdx_path):
    """Return {name: RObject} for every object in an R lazy-load database."""
    with open(rdx_path, "rb") as f:
        index = read_index(f.read())
    out = {}
    with open(rdb_path, "rb") as f:
        db = f.read()
    for name, (off, n) in sorted(index.items()):
        out[name] = unserialize(decompress_record(db[off:off + n]))
    return out


def character_vectors(rdb_path, rdx_path):
    """Return {name: [str or None, ...]} for the character vectors in the database."""
    return {k: v.value for k, v in load_lazy_db(rdb_path, rdx_path).items()
            if isinstance(v, RObject) and v.type == STRSXP}


if __name__ == "__main__":
    import sys
    for name, vec in character_vectors(sys.argv[1], sys.argv[2]).items():
        print("%s: %d strings, %d bytes" % (name, len(vec),
                                            sum(len(s.encode()) for s in vec if s)))
