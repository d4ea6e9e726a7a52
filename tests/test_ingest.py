"""Readers, access groups and chunking on real files of every supported format."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import ChunkConfig, Chunker, DocumentError, find_documents, read_document
from ingest.scan import SourceFile
from tests.conftest import CORPUS


def _read(path: Path):
    rel = path.relative_to(CORPUS).as_posix()
    return read_document(next(s for s in find_documents(CORPUS) if s.path == rel))


def test_corpus_has_every_format_and_enough_words():
    sources = find_documents(CORPUS)
    suffixes = {Path(s.path).suffix for s in sources}
    assert suffixes == {".md", ".txt", ".html", ".pdf", ".docx"}
    assert len(sources) >= 30
    words = sum(len(s.text.split()) for src in sources for s in read_document(src).sections)
    assert words >= 25_000


def test_markdown_front_matter_groups_and_heading_path():
    doc = _read(CORPUS / "hr" / "salary-bands-2026.md")
    assert doc.groups == ("finance", "hr")
    assert doc.title
    assert all(" > " in s.heading or s.heading == doc.title for s in doc.sections if s.heading)
    assert any(s.heading.startswith(doc.title + " > ") for s in doc.sections)


def test_plain_text_setext_sections():
    doc = _read(CORPUS / "product" / "fernhollow-4-release-notes.txt")
    headings = [s.heading for s in doc.sections]
    assert any("Fernhollow 4.2 (3 March 2026)" in h for h in headings)
    assert not any("=====" in s.text or "-----" in s.text for s in doc.sections)


def test_html_sections_and_no_markup():
    doc = _read(CORPUS / "hr" / "travel-policy.html")
    assert len(doc.sections) > 3
    assert not any("<p>" in s.text or "<li>" in s.text for s in doc.sections)
    assert doc.groups == ()


def test_pdf_pages_and_outline_sections():
    doc = _read(CORPUS / "security" / "data-classification-policy.pdf")
    assert doc.title == "Data Classification Policy"
    assert all(s.page is not None and s.page >= 1 for s in doc.sections)
    assert max(s.page for s in doc.sections) >= 2
    assert any(s.heading.endswith("Purpose") for s in doc.sections)


def test_docx_headings_and_sidecar_groups():
    doc = _read(CORPUS / "finance" / "pricing-and-discounts.docx")
    assert doc.groups == ("finance",)  # from pricing-and-discounts.docx.meta.yaml
    assert len({s.heading for s in doc.sections}) > 5
    assert all(s.page is None for s in doc.sections)


def test_sidecar_changes_the_document_hash(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n")
    before = find_documents(tmp_path)[0].sha256
    (tmp_path / "a.md.meta.yaml").write_text("groups: [hr]\n")
    src = find_documents(tmp_path)
    assert len(src) == 1 and src[0].sha256 != before
    assert read_document(src[0]).groups == ("hr",)


def test_invalid_groups_name_the_field_and_file(tmp_path):
    (tmp_path / "bad.md").write_text("---\ngroups: {a: 1}\n---\n# T\n\ntext\n")
    with pytest.raises(DocumentError, match="groups"):
        read_document(find_documents(tmp_path)[0])
    (tmp_path / "bad.md").write_text("---\ngroups: [Human Resources!]\n---\n# T\n\ntext\n")
    with pytest.raises(DocumentError, match="invalid group name"):
        read_document(find_documents(tmp_path)[0])


def test_binary_text_file_and_empty_document_are_errors(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02garbage")
    (tmp_path / "empty.md").write_text("---\ntitle: Nothing\n---\n")
    errors = {}
    for src in find_documents(tmp_path):
        with pytest.raises(DocumentError) as e:
            read_document(src)
        errors[src.path] = str(e.value)
    assert "binary" in errors["bin.txt"] and "no text" in errors["empty.md"]


def test_hidden_files_sidecars_and_unsupported_types_are_skipped(tmp_path):
    (tmp_path / ".hidden.md").write_text("# x\n\ny\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "doc.md").write_text("# x\n\ny\n")
    (tmp_path / "doc.md.meta.yaml").write_text("groups: [hr]\n")
    assert [s.path for s in find_documents(tmp_path)] == ["doc.md"]


def test_chunks_fit_the_embedder_and_carry_provenance(embedder):
    cfg = ChunkConfig(chunk_tokens=120, overlap_tokens=20)
    chunker = Chunker(embedder.tokenizer, cfg)
    doc = _read(CORPUS / "hr" / "employee-handbook.md")
    chunks = chunker.chunk(doc)
    assert len(chunks) > 5
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert len({c.id for c in chunks}) == len(chunks)
    for c in chunks:
        assert c.doc == "hr/employee-handbook.md" and c.title == doc.title and c.section
        assert len(embedder.tokenizer.encode(c.text, add_special_tokens=False)) <= cfg.chunk_tokens
        assert len(c.hash) == 64 and c.doc_sha256 == doc.sha256
    # overlap: consecutive chunks of one section share some words
    same = [(a, b) for a, b in zip(chunks, chunks[1:]) if a.section == b.section]
    assert same and any(set(a.text.split()[-8:]) & set(b.text.split()[:30]) for a, b in same)


def test_restricted_chunks_keep_their_groups(embedder):
    chunker = Chunker(embedder.tokenizer)
    doc = _read(CORPUS / "security" / "pen-test-findings-2026.md")
    assert doc.groups == ("security",)
    assert all(c.groups == ("security",) for c in chunker.chunk(doc))


def test_source_file_path_is_relative_posix():
    for s in find_documents(CORPUS):
        assert isinstance(s, SourceFile) and not s.path.startswith("/") and "\\" not in s.path
