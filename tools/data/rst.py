"""Light reStructuredText clean-up for the techdocs corpus (kernel and Python docs).

Not a parser: a line-based pass that keeps the prose, code and tables as they are and drops
what carries no text:
  - hyperlink targets and labels (`.. _name:`), comments (`.. anything` that is not a
    directive), SPDX lines, substitution definitions;
  - blocks of non-text directives (toctree, kernel-doc, include, image, index, ...);
  - the marker line and option lines of every other directive; its indented body stays.
    API descriptions (`.. function:: open(file)`) keep their signature as a line, and
    version notes become `New in version X.` / `Changed in version X.` / `Deprecated since
    version X.`;
  - interpreted-text roles: :role:`text` -> text, :role:`title <target>` -> title,
    :role:`~a.b.c` -> c; `text <url>`_ -> text.
"""
import re

# Directives whose whole block (marker, options and indented body) is dropped.
DROP = {
    "toctree", "kernel-doc", "kernel-abi", "kernel-feat", "kernel-include", "kernel-render",
    "kernel-figure", "maintainers-include", "include", "literalinclude", "image", "figure",
    "raw", "contents", "sectnum", "index", "highlight", "tabularcolumns", "cssclass", "class",
    "rst-class", "default-role", "role", "only", "title", "moduleauthor", "sectionauthor",
    "module", "currentmodule", "program", "testsetup", "testcleanup", "audit-event",
    "availability", "raw:html", "meta", "c:namespace", "c:namespace-push", "c:namespace-pop",
    "ifconfig", "autosummary", "automodule", "autoclass", "autofunction", "highlightlang",
}
# Directives whose argument is a description's signature: kept as a text line.
SIGNATURE = {
    "function", "method", "attribute", "data", "exception", "decorator", "decoratormethod",
    "classmethod", "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod",
    "cmdoption", "option", "envvar", "opcode", "pdbcommand", "describe", "object",
    "c:function", "c:member", "c:type", "c:var", "c:macro", "c:struct", "c:union", "c:enum",
    "c:enumerator", "c:func", "cpp:function", "cpp:class", "py:function", "py:method",
    "py:class", "py:attribute", "py:data", "rubric", "productionlist", "fixer", "2to3fixer",
    "monitoring-event", "availability-note",
}
VERSION = {
    "versionadded": "New in version %s.",
    "versionchanged": "Changed in version %s.",
    "deprecated": "Deprecated since version %s.",
    "deprecated-removed": "Deprecated since version %s.",
}

DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([A-Za-z0-9_:+-]+)::\s?(.*)$")
EXPLICIT = re.compile(r"^(\s*)\.\.(\s|$)")
FOOTNOTE = re.compile(r"^(\s*)\.\.\s+\[[^\]]+\]\s")
OPTION = re.compile(r"^\s+:[A-Za-z0-9_ -]+:(\s.*)?$")
SPDX = re.compile(r"SPDX-License-Identifier", re.I)

ROLE = re.compile(r":[A-Za-z0-9_+-]+(?::[A-Za-z0-9_+-]+)*:`((?:[^`\\]|\\.)+)`")
ROLE_AFTER = re.compile(r"`((?:[^`\\]|\\.)+)`:[A-Za-z0-9_+-]+(?::[A-Za-z0-9_+-]+)*:")
LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?")


def _role_text(m):
    t = m.group(1)
    tm = re.match(r"^(.*?)\s*<([^<>]+)>$", t, re.S)
    if tm and tm.group(1):
        return tm.group(1)
    if tm:
        t = tm.group(2)
    t = t.lstrip("!")
    if t.startswith("~"):
        t = t[1:].split(".")[-1]
    return t


def inline(line):
    line = ROLE.sub(_role_text, line)
    line = ROLE_AFTER.sub(_role_text, line)
    return LINK.sub(r"\1", line)


def _indent(s):
    return len(s) - len(s.lstrip(" \t"))


def clean(text):
    """Return the cleaned text of one .rst document."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    lines = text.split("\n")
    out = []
    i, n = 0, len(lines)

    def skip_block(start, base):
        """Index of the first line after the indented block that follows line start-1."""
        j = start
        while j < n and (lines[j].strip() == "" or _indent(lines[j].expandtabs()) > base):
            j += 1
        # give back trailing blank lines so paragraphs stay separated
        while j > start and lines[j - 1].strip() == "":
            j -= 1
        return j

    while i < n:
        line = lines[i]
        if SPDX.search(line) and (line.lstrip().startswith("..") or len(line) < 80):
            i += 1
            continue
        m = DIRECTIVE.match(line)
        if m:
            base = _indent(m.group(1).expandtabs())
            name, arg = m.group(2).lower(), m.group(3).strip()
            if name.startswith("|") or name in DROP:
                i = skip_block(i + 1, base)
                continue
            # keep the body: drop the marker and the option lines right after it
            j = i + 1
            while j < n and lines[j].strip() and OPTION.match(lines[j]):
                j += 1
            indent = m.group(1)
            if name in VERSION:
                ver = arg.split()[0] if arg else ""
                rest = arg[len(ver):].strip()
                out.append(indent + (VERSION[name] % ver) + ((" " + inline(rest)) if rest else ""))
            elif name in SIGNATURE and arg:
                out.append(indent + inline(arg))
            elif arg and name in ("note", "warning", "seealso", "important", "attention",
                                  "tip", "caution", "hint", "danger", "error", "admonition",
                                  "topic", "sidebar", "table", "list-table", "csv-table",
                                  "flat-table", "impl-detail", "math"):
                out.append(indent + inline(arg))
            i = j
            continue
        m = EXPLICIT.match(line)
        if m and not FOOTNOTE.match(line):
            # a label/target (.. _x:), a substitution definition, or a comment: drop the block
            i = skip_block(i + 1, _indent(m.group(1).expandtabs()))
            continue
        out.append(line.rstrip())
        i += 1
    # roles and links may span lines: substitute over the whole text
    return inline("\n".join(out))
