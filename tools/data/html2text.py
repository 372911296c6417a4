"""HTML -> plain text for the techdocs2 corpus (PostgreSQL and SQLite manuals).

Drops navigation (PostgreSQL's navheader/navfooter/toc blocks, SQLite's menu bar),
scripts, styles and forms; keeps <pre> blocks verbatim; one paragraph, list item, table row
or heading a line, a blank line between paragraphs. Standard library only.
"""
from html.parser import HTMLParser
import re

SKIP_TAGS = {"script", "style", "head", "form", "select", "noscript", "svg", "map"}
SKIP_CLASSES = {"navheader", "navfooter", "toc", "nosearch", "menu", "searchmenu",
                "fancy_toc", "breadcrumbs"}
PARA = {"p", "pre", "table", "ul", "ol", "dl", "blockquote", "h1", "h2", "h3", "h4", "h5",
        "h6", "hr", "div", "center", "figure", "caption"}
LINE = {"br", "li", "tr", "dt", "dd", "th", "title"}
CELL = {"td", "th"}
DROP_LINE = re.compile(r"^(This page last modified on .*|Prev Up .*|Prev Next|Home)$")


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = []
        self.buf = []
        self.pre = 0
        self.skip_tag = None
        self.skip_depth = 0
        self.cells = 0

    def flush(self):
        text = " ".join("".join(self.buf).split())
        if text:
            self.out.append(text)
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in SKIP_TAGS or (tag == "div" and classes & SKIP_CLASSES):
            self.skip_tag, self.skip_depth = tag, 1
            return
        if self.pre:
            return
        if tag in CELL:
            if self.cells:
                self.buf.append(" | ")
            self.cells += 1
            return
        if tag in PARA or tag in LINE:
            self.flush()
            if tag == "tr":
                self.cells = 0
            if tag in PARA:
                self.out.append("")
            if tag == "li":
                self.buf.append("* ")
        if tag == "pre":
            self.pre = 1
            self.prebuf = []

    def handle_startendtag(self, tag, attrs):
        if not self.skip_tag and not self.pre and (tag in LINE or tag == "hr"):
            self.flush()

    def handle_endtag(self, tag):
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag == "pre" and self.pre:
            self.pre = 0
            text = "".join(self.prebuf).expandtabs()
            lines = [ln.rstrip() for ln in text.split("\n")]
            while lines and not lines[0].strip():
                lines.pop(0)
            while lines and not lines[-1].strip():
                lines.pop()
            self.out.append("")
            self.out.extend(lines)
            self.out.append("")
            return
        if self.pre:
            return
        if tag in PARA or tag in LINE:
            self.flush()
            if tag in PARA:
                self.out.append("")

    def handle_data(self, data):
        if self.skip_tag:
            return
        if self.pre:
            self.prebuf.append(data)
        else:
            self.buf.append(data)


def html_to_text(html):
    p = _Text()
    p.feed(html)
    p.close()
    p.flush()
    lines = [ln for ln in p.out if not DROP_LINE.match(ln.strip())]
    return "\n".join(lines)
