"""ingest: documents on disk -> `Document` -> `Chunk` (with source, section, page, hash and access groups)."""

from ingest.chunking import ChunkConfig, Chunker
from ingest.readers import DocumentError
from ingest.scan import SourceFile, find_documents, read_document
from ingest.types import Chunk, Document, FailedDocument, Section, can_read

__all__ = ["Chunk", "ChunkConfig", "Chunker", "Document", "DocumentError", "FailedDocument", "Section",
           "SourceFile", "can_read", "find_documents", "read_document"]
