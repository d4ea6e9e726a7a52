"""The index as a LangChain retriever, so other LangChain applications in the company can use it as is."""

from __future__ import annotations

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from retrieve.search import Searcher


class RagtuneRetriever(BaseRetriever):
    """`RagtuneRetriever(searcher=Searcher(ws), k=4, groups=["hr"]).invoke("parental leave")` -> Documents
    whose metadata carries doc, section, page, score and groups for citations."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: Searcher
    k: int = 4
    mode: str = "hybrid"
    groups: list[str] = []

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.searcher.search(query, k=self.k, mode=self.mode, groups=frozenset(self.groups))
        docs = []
        for h in hits:
            meta = h.to_json()
            text = meta.pop("text")
            docs.append(Document(page_content=text, metadata=meta, id=h.chunk.id))
        return docs
