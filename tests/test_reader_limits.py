"""What one file may cost to read (ingest/limits.py): small hostile files of each format fail fast with a reason
naming the limit, and an index run reports them while it indexes the rest. Each hostile file here took minutes to
hours (or unbounded memory) before the limits, so every read runs under `finishes_within`, which fails the test
instead of hanging it."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import docx
import pytest
from pypdf import PdfWriter

from ingest import DocumentError, find_documents, read_document
from ingest.readers import read_docx, read_file, read_html, read_markdown


def finishes_within(seconds: float, fn, *args):
    """fn(*args)'s result or exception, or a test failure if it is still running after `seconds` (the thread is
    left behind as a daemon)."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{getattr(fn, '__name__', fn)} still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def docx_with(paragraphs: int, text: str = "") -> bytes:
    """A real DOCX (python-docx's template, a heading and a line) plus `paragraphs` more, empty or with `text`."""
    document = docx.Document()
    document.add_paragraph("Quarterly notes", style="Heading 1")
    document.add_paragraph("The first real line.")
    buf = io.BytesIO()
    document.save(buf)
    extra = (f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>" if text else "<w:p/>").encode() * paragraphs
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "word/document.xml":
                data = data.replace(b"<w:sectPr", extra + b"<w:sectPr", 1)
            zout.writestr(item, data)
    return out.getvalue()


def test_a_docx_of_ten_million_empty_paragraphs_fails_at_once_and_the_rest_is_indexed(tmp_path, embedder) -> None:
    from retrieve import build_index

    bomb = docx_with(10_000_000)
    assert len(bomb) < 200_000  # about 120 KB on disk, 58 MiB of XML unzipped
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bomb.docx").write_bytes(bomb)
    (docs / "canteen.md").write_text("# Canteen\n\nThe canteen serves the Thursday fish pie at 12:15.\n")
    t0 = time.monotonic()
    report = finishes_within(120, build_index, docs, tmp_path / "ws", None, embedder)
    assert time.monotonic() - t0 < 60
    assert report.added == ["canteen.md"]
    [failed] = report.failed
    assert failed.path == "bomb.docx" and "unzipped XML is 58.0 MiB, over the limit of 32.0 MiB" in failed.error


def test_docx_paragraphs_are_counted_before_parsing_and_read_without_the_slow_style_lookup() -> None:
    with pytest.raises(DocumentError, match=r"paragraphs and table cells is 150,002, over the limit of 100,000"):
        finishes_within(30, read_docx, docx_with(150_000))
    # python-docx's paragraph.style took ~1 ms per paragraph (20 s here); one style table makes it a fraction
    parsed = finishes_within(60, read_docx, docx_with(20_000, "more words"))
    assert parsed.title == "Quarterly notes" and parsed.sections[0].text.count("more words") == 20_000


def test_a_pdf_over_the_page_limit_fails_before_any_page_is_read() -> None:
    writer = PdfWriter()
    for _ in range(5_001):
        writer.add_blank_page(100, 100)
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(DocumentError, match=r"number of PDF pages is 5,001, over the limit of 5,000"):
        finishes_within(60, read_file, Path("many.pdf"), buf.getvalue())


def test_the_time_limit_stops_a_slow_file_between_elements() -> None:
    from ingest.limits import ReadLimits

    slow = "<h1>a" * 3_000  # nested headings: each one's text walks all those inside it
    with pytest.raises(DocumentError, match=r"took longer than the 0.2 s allowed per file \(stopped at HTML element"):
        finishes_within(60, read_html, slow, ReadLimits(seconds=0.2))


def test_html_and_text_sizes_are_bounded_before_parsing() -> None:
    from ingest.limits import ReadLimits

    big = b"<p>hello</p>" * 800_000  # 9.2 MiB: html.parser would need ~25 s
    with pytest.raises(DocumentError, match=r"the HTML file is 9.2 MiB, over the limit of 8.0 MiB"):
        finishes_within(10, read_file, Path("big.html"), big)
    with pytest.raises(DocumentError, match="the text file is 1.0 MiB, over the limit of 0.5 MiB"):
        read_file(Path("big.md"), b"x" * 2**20, ReadLimits(text_bytes=2**19))


def test_a_markdown_heading_line_of_spaces_reads_at_once() -> None:
    """The old heading regex backtracked cubically: 2 KB of spaces took 10 s, 4 KB minutes."""
    parsed = finishes_within(10, read_markdown, "# Budget" + " " * 100_000 + "2026 ##\n\nLine.\n# C#\n\nText.\n")
    assert [s.heading for s in parsed.sections] == ["Budget" + " " * 100_000 + "2026", "C#"]


def test_yaml_aliases_and_oversized_front_matter_are_refused(tmp_path) -> None:
    # six lines that the title turns into a million 'x' (9 more lines: a thousand times that, gigabytes)
    laughs = "---\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef")) + "title: *f\n---\n# T\n\nx\n"
    with pytest.raises(DocumentError, match=r"YAML aliases \(\*a\) are not allowed"):
        finishes_within(10, read_markdown, laughs)
    with pytest.raises(DocumentError, match="front matter: the YAML is over the limit of 64 KiB"):
        read_markdown("---\n" + "k: v\n" * 20_000 + "---\n# T\n\nx\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nText.\n")
    (docs / "a.md.meta.yaml").write_text("x: &x [1]\ngroups: *x\n")
    with pytest.raises(DocumentError, match=r"sidecar a.md.meta.yaml: YAML aliases"):
        read_document(find_documents(docs)[0])
