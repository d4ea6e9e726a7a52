"""The plain types ingest hands to the later stages.

A `Document` is what a reader makes of one file: its title, access groups and text cut into sections (a heading
path plus the text under it, with the page for PDFs). `Chunk` is the unit that retrieve indexes and tune learns
from; it keeps everything needed to cite it and to decide who may read it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field


@dataclass
class Section:
    heading: str  # heading path, e.g. "Travel > Hotels"; "" for text before the first heading
    text: str
    page: int | None = None  # 1-based page number for paged formats (PDF), else None


@dataclass
class Document:
    path: str  # POSIX path relative to the documents folder; the document's identity
    title: str
    sections: list[Section]
    groups: tuple[str, ...] = ()  # empty: every employee may read it
    sha256: str = ""  # hash of the file bytes plus its sidecar, so a groups change counts as a change


@dataclass
class Chunk:
    id: str  # stable: derived from doc path, position and text
    doc: str  # Document.path
    title: str
    section: str
    page: int | None
    position: int  # 0-based order of the chunk within its document
    text: str
    hash: str  # sha256 of `embed_text`; identical text reuses its stored vector
    groups: tuple[str, ...] = ()
    doc_sha256: str = ""

    @property
    def embed_text(self) -> str:
        """What gets embedded: the text with its title and section, so a question naming the topic finds it."""
        return chunk_embed_text(self.title, self.section, self.text)

    def to_json(self) -> dict:
        d = asdict(self)
        d["groups"] = list(self.groups)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Chunk":
        return cls(**{**d, "groups": tuple(d.get("groups") or ())})


@dataclass
class FailedDocument:
    path: str
    error: str


@dataclass
class ScanResult:
    documents: list[Document] = field(default_factory=list)
    failed: list[FailedDocument] = field(default_factory=list)


def chunk_embed_text(title: str, section: str, text: str) -> str:
    head = f"{title} - {section}" if section and section != title else title
    return f"{head}\n{text}" if head else text


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def can_read(chunk_groups: tuple[str, ...] | list[str], user_groups: frozenset[str] | set[str]) -> bool:
    """The one access rule: an unrestricted chunk is for everyone, a restricted one for members of any of its groups."""
    return not chunk_groups or bool(set(chunk_groups) & set(user_groups))
