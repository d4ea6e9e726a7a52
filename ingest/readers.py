"""One reader per file format. Each turns bytes into a title, sections and (for Markdown/text) front-matter metadata.

Readers raise `DocumentError` (or let a library's own exception through) when a file cannot be read, or when it
would cost more than `ReadLimits` allow (ingest/limits.py); the scanner turns that into a reported failure and
goes on with the other files.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from ingest.limits import DEFAULT_LIMITS, Deadline, DocumentError, ReadLimits, check_docx_zip, load_yaml_meta, over
from ingest.types import Section

__all__ = ["SUPPORTED_SUFFIXES", "DocumentError", "Parsed", "ReadLimits", "read_file"]


@dataclass
class Parsed:
    title: str
    sections: list[Section]
    meta: dict = field(default_factory=dict)  # front matter (Markdown, text); sidecars are read by the scanner


def read_file(path: Path, data: bytes, limits: ReadLimits = DEFAULT_LIMITS) -> Parsed:
    """Parse one file with the reader its suffix names in `READERS`."""
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise DocumentError(f"unsupported file type {suffix!r}")
    return READERS[suffix](data, limits, Deadline(limits))


def _text(data: bytes, limits: ReadLimits) -> str:
    if len(data) > limits.text_bytes:
        raise over("the text file", len(data), limits.text_bytes, "bytes")
    return _decode_text(data)


def _markdown_file(data: bytes, limits: ReadLimits, deadline: Deadline) -> Parsed:
    return read_markdown(_text(data, limits), limits)


def _text_file(data: bytes, limits: ReadLimits, deadline: Deadline) -> Parsed:
    return read_plain_text(_text(data, limits), limits)


def _html_file(data: bytes, limits: ReadLimits, deadline: Deadline) -> Parsed:
    if len(data) > limits.html_bytes:
        raise over("the HTML file", len(data), limits.html_bytes, "bytes")
    return read_html(_decode_text(data), limits, deadline)


def _decode_text(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        raise DocumentError("binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # old Windows exports; better a few odd characters than nothing


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)


def split_front_matter(text: str, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[dict, str]:
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    return load_yaml_meta(m.group(1), "front matter", limits), text[m.end():]


class _SectionBuilder:
    """Collects lines under a stack of headings; a heading at level L replaces levels >= L."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []
        self.lines: list[str] = []
        self.sections: list[Section] = []
        self.page: int | None = None

    def heading(self, level: int, text: str) -> None:
        self.flush()
        self.stack = [(lvl, t) for lvl, t in self.stack if lvl < level] + [(level, text.strip())]

    def add(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        text = "\n".join(self.lines).strip()
        text = re.sub(r"\n{3,}", "\n\n", text)
        if text:
            self.sections.append(Section(" > ".join(t for _, t in self.stack), text, self.page))
        self.lines = []

    def done(self) -> list[Section]:
        self.flush()
        return self.sections


def _title_and_sections(meta: dict, sections: list[Section], fallback: str) -> Parsed:
    title = str(meta.get("title") or "").strip()
    if not title and sections and sections[0].heading:
        title = sections[0].heading.split(" > ")[0]
    return Parsed(title or fallback, sections, meta)


_ATX_HEADING = re.compile(r"(#{1,6})[ \t]+(\S.*)")


def _atx_heading(line: str) -> tuple[int, str] | None:
    """'## Title ##' -> (2, 'Title'). One anchored match, then plain string work: a single regex that also
    stripped the closing hashes backtracked cubically, and one 4 KB line of spaces took minutes."""
    m = _ATX_HEADING.match(line)
    if not m:
        return None
    text = m.group(2).rstrip()
    closed = text.rstrip("#")
    if closed != text and (not closed or closed[-1] in " \t"):  # a closing '###' run (CommonMark), not 'C#'
        text = closed.rstrip()
    return (len(m.group(1)), text) if text else None


def read_markdown(text: str, limits: ReadLimits = DEFAULT_LIMITS) -> Parsed:
    meta, body = split_front_matter(text, limits)
    b = _SectionBuilder()
    in_fence = False
    for line in body.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        heading = None if in_fence else _atx_heading(line)
        if heading:
            b.heading(*heading)
        else:
            b.add(line)
    return _title_and_sections(meta, b.done(), "")


def read_plain_text(text: str, limits: ReadLimits = DEFAULT_LIMITS) -> Parsed:
    """Plain text with setext headings: a line underlined by '=' (level 1) or '-' (level 2)."""
    meta, body = split_front_matter(text, limits)
    lines = body.splitlines()
    b = _SectionBuilder()
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"(=+|-+)\s*", nxt) and len(nxt.strip()) >= max(3, len(line.strip()) // 2):
            b.heading(1 if nxt.strip()[0] == "=" else 2, line)
            i += 2
            continue
        b.add(line)
        i += 1
    return _title_and_sections(meta, b.done(), "")


_BLOCKS = ("p", "li", "pre", "blockquote", "dt", "dd", "tr", "figcaption", "caption")


def read_html(text: str, limits: ReadLimits = DEFAULT_LIMITS, deadline: Deadline | None = None) -> Parsed:
    from bs4 import BeautifulSoup

    deadline = deadline or Deadline(limits)
    soup = BeautifulSoup(text, "html.parser")
    for junk in soup(["script", "style", "nav", "noscript", "template"]):
        junk.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    b = _SectionBuilder()
    body = soup.body or soup
    elements = body.find_all(True)
    if len(elements) > limits.html_elements:
        raise over("the number of HTML elements", len(elements), limits.html_elements)
    holds_block = set()  # ids of elements with a block inside; children come after parents, so walk backwards
    for el in reversed(elements):
        if (el.name in _BLOCKS or id(el) in holds_block) and el.parent is not None:
            holds_block.add(id(el.parent))
    for n, el in enumerate(elements):
        deadline.check(f"HTML element {n + 1:,}")
        if re.fullmatch(r"h[1-6]", el.name):
            b.heading(int(el.name[1]), el.get_text(" ", strip=True))
        elif el.name in _BLOCKS and id(el) not in holds_block:
            sep = " | " if el.name == "tr" else " "
            piece = el.get_text(sep, strip=True)
            if piece:
                b.add(("- " if el.name == "li" else "") + piece)
    return _title_and_sections({"title": title}, b.done(), "")


def _pdf_pages(data: bytes, limits: ReadLimits, deadline: Deadline):
    """(reader, text of each page), within the page, stream and text limits."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        with _pdf_stream_cap(limits.pdf_stream_bytes):
            reader = PdfReader(io.BytesIO(data))
            if len(reader.pages) > limits.pages:
                raise over("the number of PDF pages", len(reader.pages), limits.pages)
            pages, chars = [], 0
            for number, page in enumerate(reader.pages, start=1):
                deadline.check(f"page {number}")
                pages.append(page.extract_text() or "")
                chars += len(pages[-1])
                if chars > limits.text_chars:
                    raise over(f"the text of pages 1-{number}", chars, limits.text_chars)
    except (PyPdfError, ValueError, KeyError, TypeError, RecursionError) as e:
        if isinstance(e, DocumentError):
            raise
        raise DocumentError(f"not a readable PDF ({type(e).__name__}: {e})") from e
    return reader, pages


def _pdf_stream_cap(max_bytes: int):
    """pypdf's per-stream decompression caps lowered to `max_bytes` (pypdf >= 6.4 has a configuration for them;
    older versions keep their own 75 MB caps)."""
    import contextlib

    import pypdf

    if not hasattr(pypdf, "apply_configuration"):
        return contextlib.nullcontext()
    return pypdf.apply_configuration(zlib_maximum_output_length=max_bytes, lzw_maximum_output_length=max_bytes,
                                     run_length_maximum_output_length=max_bytes,
                                     array_based_stream_maximum_output_length=max_bytes)


def read_pdf(data: bytes, limits: ReadLimits = DEFAULT_LIMITS, deadline: Deadline | None = None) -> Parsed:
    """Text per page; section headings come from the PDF outline (bookmarks) when it has one."""
    reader, pages = _pdf_pages(data, limits, deadline or Deadline(limits))
    outline = _pdf_outline_titles(reader)
    title = ""
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title)
    b = _SectionBuilder()
    for number, page_text in enumerate(pages, start=1):
        b.flush()
        b.page = number
        for line in page_text.splitlines():
            level = outline.get(line.strip())
            if level:
                b.heading(level, line)
            else:
                b.add(line)
    sections = b.done()
    if not any(s.text.strip() for s in sections):
        raise DocumentError("the PDF has no extractable text (scanned images need OCR first)")
    return _title_and_sections({"title": title}, sections, "")


def _pdf_outline_titles(reader) -> dict[str, int]:
    titles: dict[str, int] = {}

    def walk(items, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
            elif getattr(item, "title", None):
                titles[str(item.title).strip()] = level

    try:
        walk(reader.outline, 1)
    except Exception:  # a broken outline only costs us the section names, never the text
        return {}
    return titles


def read_docx(data: bytes, limits: ReadLimits = DEFAULT_LIMITS, deadline: Deadline | None = None) -> Parsed:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    deadline = deadline or Deadline(limits)
    check_docx_zip(data, limits)  # before python-docx unzips and parses anything
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise DocumentError(f"not a readable DOCX file ({type(e).__name__}: {e})") from e
    b = _SectionBuilder()
    title = document.core_properties.title or ""
    style_of = _docx_style_names(document, deadline)
    chars = 0
    for n, block in enumerate(_docx_blocks(document)):
        deadline.check(f"paragraph {n + 1:,}")
        if isinstance(block, str):
            text, style = block, ""
        else:
            text = block.text.strip()
            if not text:
                continue
            style = style_of(block)
        chars += len(text)
        if chars > limits.text_chars:
            raise over("the DOCX's text", chars, limits.text_chars)
        if style == "Title":
            title = title or text
        elif style.startswith("Heading"):
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            b.heading(level, text)
        else:
            b.add(("- " if "List" in style else "") + text)
    return _title_and_sections({"title": title}, b.done(), "")


def _docx_style_names(document, deadline: Deadline):
    """paragraph -> its style name, from one table of the document's paragraph styles. python-docx's own
    `paragraph.style` searches every style for the default on each call (~1 ms per paragraph, ~3 h for the ten
    million empty paragraphs a 131 KB file can hold)."""
    from docx.enum.style import WD_STYLE_TYPE

    names = {}
    for n, style in enumerate(document.styles):
        if n % 1000 == 0:
            deadline.check("the style table")
        if style.type == WD_STYLE_TYPE.PARAGRAPH:
            names[style.style_id] = style.name or ""
    default_style = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    default = (default_style.name or "") if default_style is not None else ""
    return lambda paragraph: names.get(paragraph._p.style, default)


def _docx_blocks(document):
    """Paragraphs and tables in document order (tables flattened to 'cell | cell' rows)."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            yield Paragraph(child, document)
        elif tag == "tbl":
            for row in Table(child, document).rows:
                yield " | ".join(cell.text.strip() for cell in row.cells)


# The formats ragtune reads, suffix -> reader(data, limits, deadline): the one list the scanner, the app's upload box
# and the upload checks (serve/docs_admin.py) read. A new format is a row here and its reader above.
READERS = {".md": _markdown_file, ".markdown": _markdown_file, ".txt": _text_file, ".html": _html_file,
           ".htm": _html_file, ".pdf": read_pdf, ".docx": read_docx}
SUPPORTED_SUFFIXES = tuple(READERS)
