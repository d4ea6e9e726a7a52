"""Cut documents into overlapping chunks measured in the embedder's own tokens (langchain-text-splitters)."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.types import Chunk, Document, chunk_embed_text, sha256_hex


@dataclass
class ChunkConfig:
    chunk_tokens: int = 200  # chunk size in embedder tokens; MiniLM reads at most 256, title and section included
    overlap_tokens: int = 40  # tokens shared by neighbouring chunks so a fact cut at a boundary survives whole


class Chunker:
    def __init__(self, tokenizer, config: ChunkConfig | None = None) -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.config = config or ChunkConfig()
        self.splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer,
            chunk_size=self.config.chunk_tokens,
            chunk_overlap=self.config.overlap_tokens,
            separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
            keep_separator="end",  # a sentence keeps its full stop; the next chunk starts with a word, not ". "
        )

    def chunk(self, doc: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in doc.sections:
            for piece in self.splitter.split_text(section.text):
                piece = piece.strip()
                if not piece:
                    continue
                position = len(chunks)
                embed_hash = sha256_hex(chunk_embed_text(doc.title, section.heading, piece))
                chunk_id = sha256_hex(f"{doc.path}\x00{position}\x00{embed_hash}")[:20]
                chunks.append(
                    Chunk(chunk_id, doc.path, doc.title, section.heading, section.page, position, piece,
                          embed_hash, doc.groups, doc.sha256)
                )
        return chunks
