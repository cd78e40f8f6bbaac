"""Paragraphs of prose from documentation formats: DocBook/HTML pages, GNOME's Mallard help pages
and troff man pages, for sentences from other domains than the fortune cookies (text_sources.py).

Each reader returns a document's paragraphs as single lines. Inline markup that holds code rather
than prose (commands, file names, options, literals, user input, URLs; bold and italic runs in man
pages, which are commands and arguments there) becomes CODE, a character no sentence filter
accepts, so a sentence that names a command or a path is dropped whole instead of being read aloud
with a hole in it.
"""
from __future__ import annotations

import gzip
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

CODE = "\u2400"  # SYMBOL FOR NULL: stands for an inline run of code; never in an accepted sentence

# HTML block elements: each starts and ends a paragraph.
_HTML_BLOCKS = {"p", "div", "li", "dd", "dt", "td", "th", "tr", "ul", "ol", "dl", "table", "h1", "h2", "h3", "h4",
                "h5", "h6", "br", "blockquote", "section", "article", "caption", "figcaption", "title"}
_HTML_SKIPPED = {"script", "style", "head", "pre"}  # no prose inside
_HTML_CODE_TAGS = {"code", "tt", "kbd", "samp", "var"}
# DocBook's HTML marks technical runs by class (the installation guide, Debian reference, handbook, FAQ).
_HTML_CODE_CLASSES = {"command", "filename", "literal", "option", "replaceable", "userinput", "computeroutput",
                      "systemitem", "package", "envar", "varname", "function", "parameter", "prompt", "email",
                      "uri", "url", "programlisting", "screen", "type", "classname", "token", "application"}
# Mallard (GNOME help): inline elements holding code, and blocks that are not prose.
_MALLARD_CODE = {"code", "cmd", "file", "sys", "var", "output", "input", "key", "keyseq", "em:code"}
_MALLARD_SKIPPED = {"info", "screen", "media", "title", "desc", "note:title", "comment"}
_MALLARD_BLOCKS = {"p", "item", "td", "th"}


def read_document(path: Path) -> list[str]:
    """The prose paragraphs of one file, by its format (.html, .page, troff man page, optionally .gz)."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".html", ".htm")):
        reader = html_paragraphs
    elif name.endswith(".page"):
        reader = mallard_paragraphs
    elif re.search(r"\.\d\w*$", name):
        reader = man_paragraphs
    else:
        raise ValueError(f"{path}: unknown document format (expected .html, .page or a man page)")
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return reader(data.decode("utf-8", errors="replace"))


class _HtmlProse(HTMLParser):
    """Collects the text of block elements, code runs replaced by CODE."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.current: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, is code or skipped)

    def _hidden(self) -> bool:
        return any(hidden for _, hidden in self.stack)

    def _flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            self.paragraphs.append(text)
        self.current = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag in _HTML_BLOCKS:
            self._flush()
        if tag in ("br", "img", "hr", "meta", "link", "input"):
            return  # void elements: nothing to close
        classes = set((dict(attrs).get("class") or "").split())
        skipped = tag in _HTML_SKIPPED
        code = tag in _HTML_CODE_TAGS or bool(classes & _HTML_CODE_CLASSES)
        if code and not self._hidden():
            self.current.append(CODE)
        self.stack.append((tag, skipped or code))

    def handle_endtag(self, tag) -> None:
        if tag in _HTML_BLOCKS:
            self._flush()
        for i in range(len(self.stack) - 1, -1, -1):  # close up to the matching open tag (lenient HTML)
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data) -> None:
        if not self._hidden():
            self.current.append(data)


def html_paragraphs(html: str) -> list[str]:
    """Paragraphs of an HTML page (DocBook output included), code runs as CODE."""
    parser = _HtmlProse()
    parser.feed(html)
    parser.close()
    parser._flush()
    return [p for p in parser.paragraphs if p.replace(CODE, "").strip()]


def _local(tag: str) -> str:
    """'{http://projectmallard.org/1.0/}p' → 'p'; other namespaces keep a prefix ('ui:thumb' style)."""
    if tag.startswith("{http://projectmallard.org/1.0/}"):
        return tag.split("}", 1)[1]
    return tag.rsplit("/", 1)[-1].replace("}", ":") if "}" in tag else tag


def mallard_paragraphs(xml: str) -> list[str]:
    """Paragraphs (<p>, list items, table cells) of a Mallard page, code runs as CODE."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    out: list[str] = []

    def text_of(element) -> str:
        parts = [element.text or ""]
        for child in element:
            name = _local(child.tag)
            if name in _MALLARD_CODE:
                parts.append(CODE)
            elif name not in _MALLARD_SKIPPED and name not in _MALLARD_BLOCKS:
                parts.append(text_of(child))
            parts.append(child.tail or "")
        return "".join(parts)

    def walk(element) -> None:
        for child in element:
            name = _local(child.tag)
            if name in _MALLARD_SKIPPED:
                continue
            inner_blocks = any(_local(c.tag) in _MALLARD_BLOCKS for c in child.iter() if c is not child)
            if name in _MALLARD_BLOCKS and not inner_blocks:
                text = " ".join(text_of(child).split())
                if text.replace(CODE, "").strip():
                    out.append(text)
            else:
                walk(child)

    walk(root)
    return out


# troff: escapes that stand for characters, and the ones that only change fonts or spacing.
_TROFF_CHARS = {"em": "—", "en": "–", "hy": "-", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘",
                "cq": "’",
                "Fo": "«", "Fc": "»", "bu": "•", "co": "©", "rg": "®", "mu": "×", "de": "°", "ss": "ß"}
_TROFF_ESCAPE = re.compile(r"\\(\((..)|\[([^\]]*)\]|f(\(..|\[[^\]]*\]|.)|s[-+]?\d+|[-&%e c|^0~:]|\*\(..|\*.|.)")
_PARAGRAPH_MACROS = {"PP", "P", "LP", "SH", "SS", "TP", "IP", "HP", "TH", "RS", "RE", "sp", "br", "nf", "fi", "TQ",
                     "EX", "EE", "in", "ti", "ce", "bp", "ne", "UR", "UE", "MT", "ME", "SY", "YS", "OP", "de", "ig"}
_FONT_MACROS = {"B", "I", "BI", "BR", "IB", "IR", "RB", "RI", "SM", "SB"}


def _troff_inline(line: str) -> str:
    """Text of a troff line: character escapes resolved, bold/italic runs (commands, arguments) as CODE."""
    out, font_code = [], False

    def char(match: re.Match) -> str:
        nonlocal font_code
        whole, two, bracket, font = match.group(1), match.group(2), match.group(3), match.group(4)
        if font is not None:
            name = font.strip("([]")
            was, font_code = font_code, name not in ("R", "P", "1", "", "CR")
            return CODE if font_code and not was else ""
        if two is not None or bracket is not None:
            return _TROFF_CHARS.get(two or bracket, CODE)
        if whole == "-":
            return "-"
        if whole == "e":
            return CODE  # a literal backslash: code
        if whole in ("&", "%", "c", "|", "^", "0", ":") or whole.startswith(("s", "*")):
            return "" if not whole.startswith("*") else CODE
        if whole in (" ", "~"):
            return " "
        return ""

    out.append(_TROFF_ESCAPE.sub(char, line))
    return "".join(out)


def man_paragraphs(troff: str) -> list[str]:
    """Paragraphs of a man page's running text (the man macros' paragraph breaks), code runs as CODE."""
    paragraphs, current, skipping = [], [], False

    def flush() -> None:
        text = " ".join(" ".join(current).split())
        if text.replace(CODE, "").strip():
            paragraphs.append(text)
        current.clear()

    for raw in troff.splitlines():
        line = raw.rstrip()
        if line.startswith((".\\\"", "'\\\"", '.\\"')) or line.startswith("\\\""):
            continue  # comment
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            if name in ("nf", "EX"):
                skipping = True  # preformatted: examples, code
            elif name in ("fi", "EE"):
                skipping = False
            if name in _PARAGRAPH_MACROS or not name:
                flush()
            elif name in _FONT_MACROS:
                current.append(CODE)  # a bold/italic line in a man page is a command, option or argument
            continue
        if skipping:
            continue
        if not line.strip():
            flush()
            continue
        current.append(_troff_inline(line))
    flush()
    return paragraphs
