"""The workspace's learned retrieval parts (made by `ragtune tune-retriever`) and which of them search uses.

    WS/retrievers/settings.json       what search runs: {"dense_weight" (null: adaptive fusion, a number: weighted
                                      RRF), "reranker", "embedder", "rerank_top", "rerank_tokens", "rerank_weight"};
                                      written last and atomically, so a reader sees the old choice or the new one
    WS/retrievers/reranker-<stamp>/   a sentence-transformers CrossEncoder folder + card.json
    WS/retrievers/embedder-<stamp>/   a SentenceTransformer folder + card.json; the index built with it names it in
                                      its manifest (settings.embed_model), like any other embedder

A workspace without settings.json searches with the defaults: adaptive score fusion, the packaged embedder, no
reranker.
Each trained part has its own stamped folder, so a new embedder changes the index's embedder fingerprint (the
indexer re-embeds) and a running server never reads a half-replaced model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ingest.files import write_text_atomic
from ingest.workspace import Workspace
from retrieve.rerank import RERANK_TOKENS

SETTINGS = "settings.json"
CARD = "card.json"


@dataclass
class RetrieverSettings:
    dense_weight: float | None = None  # hybrid fusion. None (JSON null, the default): adaptive score fusion
    # (retrieve/fusion.adaptive_fuse: z-scores weighted per query by each list's confidence, no constant): it found
    # the answer's chunk at least as often as plain RRF and the better single retriever on every development set,
    # with rag and hybrid answers as good (docs/RESULTS.md). A number w: weighted reciprocal-rank fusion, w for the
    # dense ranks and 1 - w for BM25's; 0.5 is plain RRF, 0 ranks like BM25 alone, 1 like dense alone.
    reranker: str | None = None  # folder under WS/retrievers of the cross-encoder that reorders hybrid results
    embedder: str | None = None  # folder under WS/retrievers of the tuned embedder the index is built with
    rerank_top: int = 20  # the reranker reorders this many fused candidates
    rerank_tokens: int = RERANK_TOKENS  # question + passage are cut to this many tokens for the reranker
    rerank_weight: float = 1.0  # the reranker's order against the fused one in the top-N (weighted RRF of the
    # two orders; 1 = the reranker's order alone)

    def check(self, where: str = "retriever settings") -> "RetrieverSettings":
        def fraction(key: str, allow_null: bool) -> None:
            value = getattr(self, key)
            if value is None and allow_null:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                also = " or null (adaptive fusion)" if allow_null else ""
                raise ValueError(f"{where}: {key} must be a number between 0 and 1{also}, not {value!r}")

        fraction("dense_weight", allow_null=True)
        fraction("rerank_weight", allow_null=False)
        for key, least in (("rerank_top", 1), ("rerank_tokens", 16)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{where}: {key} must be a whole number >= {least}, not {value!r}")
        for part in (self.reranker, self.embedder):
            if part is not None and (not isinstance(part, str) or "/" in part or part.startswith(".")):
                raise ValueError(f"{where}: {part!r} is not a folder name under retrievers/")
        return self


def retrievers_dir(workspace: Path) -> Path:
    return Workspace(workspace).retrievers


def read_settings(workspace: Path) -> RetrieverSettings:
    """The workspace's retriever settings; defaults when there are none. A damaged file is an error naming it."""
    path = retrievers_dir(workspace) / SETTINGS
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RetrieverSettings()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e}); rerun `ragtune tune-retriever` or delete it") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    known = {f.name for f in fields(RetrieverSettings)}
    try:
        return RetrieverSettings(**{k: v for k, v in raw.items() if k in known}).check(str(path))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def settings_stamp(workspace: Path) -> int | None:
    """Changes whenever settings.json is replaced (one stat): readers re-read the settings only then."""
    try:
        return (retrievers_dir(workspace) / SETTINGS).stat().st_mtime_ns
    except FileNotFoundError:
        return None


def write_settings(workspace: Path, settings: RetrieverSettings) -> Path:
    settings.check()
    root = retrievers_dir(workspace)
    root.mkdir(parents=True, exist_ok=True)
    path = root / SETTINGS
    write_text_atomic(path, json.dumps(asdict(settings), indent=1) + "\n")
    return path


def part_path(workspace: Path, name: str) -> Path:
    return retrievers_dir(workspace) / name


def read_part_card(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def tuned_embedder_path(workspace: Path) -> str | None:
    """The folder of the workspace's active tuned embedder, None when search uses the packaged one."""
    name = read_settings(workspace).embedder
    if name is None:
        return None
    path = part_path(workspace, name)
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{retrievers_dir(workspace) / SETTINGS} names embedder {name!r}, but {path} is not "
                                "a sentence-transformers folder: rerun `ragtune tune-retriever` (or --reset)")
    return str(path.resolve())


def localize_model_path(workspace: Path, model: str, built_in: str) -> str:
    """An index's embedder as seen from `workspace`: a model folder inside the workspace that built the index is
    taken at the same place inside this one (a copied workspace never reads the original's tuned embedder)."""
    path = Path(model)
    if built_in and path.is_absolute():
        origin = Path(built_in)
        if path.is_relative_to(origin):
            local = Path(workspace).resolve() / path.relative_to(origin)
            if local.exists():
                return str(local)
    return model


def list_parts(workspace: Path) -> list[dict]:
    """Every trained part with its card and whether search uses it (for `ragtune tune-retriever --list`)."""
    root = retrievers_dir(workspace)
    if not root.is_dir():
        return []
    settings = read_settings(workspace)
    active = {settings.reranker, settings.embedder}
    return [{"name": p.name, "active": p.name in active, "card": read_part_card(p)}
            for p in sorted(root.iterdir()) if p.is_dir() and (p / CARD).is_file()]


def remove_unused(workspace: Path, keep: set[str]) -> list[str]:
    """Delete trained parts that are neither in `keep` nor active; returns their names."""
    settings = read_settings(workspace)
    keep = set(keep) | {settings.reranker, settings.embedder}
    removed = []
    root = retrievers_dir(workspace)
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.is_dir() and p.name.startswith(("reranker-", "embedder-", ".tmp-")) and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
