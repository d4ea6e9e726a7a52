"""What reading one file may cost, so a small hostile file cannot tie up indexing (one re-index runs at a time).

Each reader is bounded twice: the input is measured before a library parses it (bytes, unzipped bytes, XML size,
paragraph tags, pages), so every single library call has a bounded input; and a deadline is checked between pages,
paragraphs, table rows and HTML elements, so the loops around those calls stop after `seconds`. Either way the
reader raises `DocumentError` naming the limit; the indexer reports it as that file's failure and indexes the rest.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from dataclasses import dataclass

import yaml

MiB = 2 ** 20


class DocumentError(ValueError):
    """A document that cannot be read; the message says why in words a user understands."""


@dataclass(frozen=True)
class ReadLimits:
    seconds: float = 120.0  # per file, checked between pages / paragraphs / rows / elements
    text_bytes: int = 32 * MiB  # Markdown and plain text (linear-time readers)
    html_bytes: int = 8 * MiB  # HTML: html.parser needs ~2.5 s per MiB on a laptop core
    html_elements: int = 400_000
    zip_entries: int = 5_000  # DOCX parts (a real one has tens, plus its images)
    unzipped_bytes: int = 256 * MiB  # DOCX: all parts as the zip declares them (zipfile never yields more)
    xml_bytes: int = 32 * MiB  # DOCX: the XML parts python-docx parses into one tree
    paragraphs: int = 100_000  # DOCX paragraphs plus table cells, counted before parsing
    pages: int = 5_000  # PDF
    pdf_stream_bytes: int = 32 * MiB  # PDF: one decompressed stream (pypdf's own cap, lowered)
    text_chars: int = 20_000_000  # text extracted from one PDF or DOCX
    front_matter_bytes: int = 64 * 1024  # YAML front matter and sidecars


DEFAULT_LIMITS = ReadLimits()


class Deadline:
    """`check()` raises DocumentError once `limits.seconds` have passed since the reader started."""

    def __init__(self, limits: ReadLimits) -> None:
        self.seconds = limits.seconds
        self.end = time.monotonic() + limits.seconds

    def check(self, where: str = "") -> None:
        if time.monotonic() > self.end:
            raise DocumentError(f"reading took longer than the {self.seconds:g} s allowed per file"
                                + (f" (stopped at {where})" if where else ""))


def over(what: str, value: float, limit: float, unit: str = "") -> DocumentError:
    def fmt(n: float) -> str:
        return f"{n / MiB:.1f} MiB" if unit == "bytes" else f"{int(n):,}"

    return DocumentError(f"{what} is {fmt(value)}, over the limit of {fmt(limit)} per file")


# The start of a paragraph or table cell element, whatever prefix the producer gave the WordprocessingML namespace.
_DOCX_BLOCK_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:p|tc)[\s/>]")


def check_docx_zip(data: bytes, limits: ReadLimits) -> None:
    """Measure a DOCX before python-docx opens it: entries, unzipped size, XML size and paragraph count."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DocumentError(f"not a readable DOCX file ({type(e).__name__}: {e})") from e
    if len(infos) > limits.zip_entries:
        raise over("the number of parts in the DOCX", len(infos), limits.zip_entries)
    total = sum(i.file_size for i in infos)
    if total > limits.unzipped_bytes:
        raise over("the unzipped DOCX", total, limits.unzipped_bytes, "bytes")
    xml = [i for i in infos if i.filename.lower().endswith((".xml", ".rels"))]
    xml_total = sum(i.file_size for i in xml)
    if xml_total > limits.xml_bytes:
        raise over("the DOCX's unzipped XML", xml_total, limits.xml_bytes, "bytes")
    blocks = 0
    try:
        for info in xml:
            blocks += len(_DOCX_BLOCK_TAG.findall(archive.read(info)))
    except (zipfile.BadZipFile, ValueError, OSError, RuntimeError) as e:  # RuntimeError: encrypted entry
        raise DocumentError(f"not a readable DOCX file ({type(e).__name__}: {e})") from e
    if blocks > limits.paragraphs:
        raise over("the number of paragraphs and table cells", blocks, limits.paragraphs)


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses anchors and aliases: a few lines of `*a` references can stand for a billion
    values once something turns them into a string."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise DocumentError(f"YAML aliases (*{event.anchor}) are not allowed here "
                                f"(line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def load_yaml_meta(text: str, where: str, limits: ReadLimits = DEFAULT_LIMITS) -> dict:
    """Front matter or a sidecar as a mapping; DocumentError naming `where` if it is too big, invalid or not a
    mapping."""
    if len(text.encode("utf-8")) > limits.front_matter_bytes:
        raise DocumentError(f"{where}: the YAML is over the limit of {limits.front_matter_bytes // 1024} KiB")
    try:
        meta = yaml.load(text, Loader=_NoAliasLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise DocumentError(f"{where}: invalid YAML: {e}") from e
    except DocumentError as e:  # an alias
        raise DocumentError(f"{where}: {e}") from None
    if not isinstance(meta, dict):
        raise DocumentError(f"{where}: the YAML is not a mapping")
    return meta
