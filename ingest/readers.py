"""One reader per file format. Each turns bytes into a title, sections and (for Markdown/text) front-matter metadata.

Readers raise `DocumentError` (or let a library's own exception through) when a file cannot be read; the scanner
turns that into a reported failure and goes on with the other files.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ingest.types import Section

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx")


class DocumentError(ValueError):
    """A document that cannot be read; the message says why in words a user understands."""


@dataclass
class Parsed:
    title: str
    sections: list[Section]
    meta: dict = field(default_factory=dict)  # front matter (Markdown, text); sidecars are read by the scanner


def read_file(path: Path, data: bytes) -> Parsed:
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown"):
        return read_markdown(_decode_text(data))
    if suffix == ".txt":
        return read_plain_text(_decode_text(data))
    if suffix in (".html", ".htm"):
        return read_html(_decode_text(data))
    if suffix == ".pdf":
        return read_pdf(data)
    if suffix == ".docx":
        return read_docx(data)
    raise DocumentError(f"unsupported file type {suffix!r}")


def _decode_text(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        raise DocumentError("binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # old Windows exports; better a few odd characters than nothing


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)


def split_front_matter(text: str) -> tuple[dict, str]:
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise DocumentError(f"invalid YAML front matter: {e}") from e
    if not isinstance(meta, dict):
        raise DocumentError("front matter is not a YAML mapping")
    return meta, text[m.end():]


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


def read_markdown(text: str) -> Parsed:
    meta, body = split_front_matter(text)
    b = _SectionBuilder()
    in_fence = False
    for line in body.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        m = None if in_fence else re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if m:
            b.heading(len(m.group(1)), m.group(2))
        else:
            b.add(line)
    return _title_and_sections(meta, b.done(), "")


def read_plain_text(text: str) -> Parsed:
    """Plain text with setext headings: a line underlined by '=' (level 1) or '-' (level 2)."""
    meta, body = split_front_matter(text)
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


def read_html(text: str) -> Parsed:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for junk in soup(["script", "style", "nav", "noscript", "template"]):
        junk.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    b = _SectionBuilder()
    body = soup.body or soup
    for el in body.find_all(True):
        if re.fullmatch(r"h[1-6]", el.name):
            b.heading(int(el.name[1]), el.get_text(" ", strip=True))
        elif el.name in _BLOCKS and not el.find(_BLOCKS):
            sep = " | " if el.name == "tr" else " "
            piece = el.get_text(sep, strip=True)
            if piece:
                b.add(("- " if el.name == "li" else "") + piece)
    return _title_and_sections({"title": title}, b.done(), "")


def read_pdf(data: bytes) -> Parsed:
    """Text per page; section headings come from the PDF outline (bookmarks) when it has one."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as e:
        raise DocumentError(f"not a readable PDF ({type(e).__name__}: {e})") from e
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


def read_docx(data: bytes) -> Parsed:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise DocumentError(f"not a readable DOCX file ({type(e).__name__}: {e})") from e
    b = _SectionBuilder()
    title = document.core_properties.title or ""
    for block in _docx_blocks(document):
        if isinstance(block, str):
            b.add(block)
            continue
        style = (block.style.name if block.style is not None else "") or ""
        text = block.text.strip()
        if not text:
            continue
        if style == "Title":
            title = title or text
        elif style.startswith("Heading"):
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            b.heading(level, text)
        else:
            b.add(("- " if "List" in style else "") + text)
    return _title_and_sections({"title": title}, b.done(), "")


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
