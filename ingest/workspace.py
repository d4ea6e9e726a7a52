"""`Workspace`: every path under WS, in one place (ARCHITECTURE.md, "State on disk", describes what each holds).

    ws = Workspace(Path("workspace"))
    ws.index / "CURRENT", ws.adapter("demo"), ws.dataset("default") / "train.jsonl", ws.models

It lives in the lowest layer so every stage names its folders through it; it only joins paths (nothing is created
or checked here: adapter names are checked by tune/adapters.check_name, dataset names by SynthConfig.check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def index(self) -> Path:
        """CURRENT, gen-NNNNNN/ generations, last_run.json, .lock (retrieve/store.py)."""
        return self.root / "index"

    @property
    def retrievers(self) -> Path:
        """settings.json and the tuned embedder / reranker folders (retrieve/retrievers.py)."""
        return self.root / "retrievers"

    @property
    def models(self) -> Path:
        """The default generator dequantized to safetensors (generate/models.py)."""
        return self.root / "models"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    def dataset(self, name: str) -> Path:
        """train.jsonl, val.jsonl, card.json, card.md of one `ragtune synth` run."""
        return self.datasets / name

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    def adapter(self, name: str) -> Path:
        """A peft adapter with card.json and README.md (tune/adapters.py)."""
        return self.adapters / name

    @property
    def runs(self) -> Path:
        """Checkpoints of unfinished `ragtune tune` runs, one folder per adapter name (--resume)."""
        return self.adapters / ".runs"

    @property
    def evals(self) -> Path:
        """One folder per `ragtune eval` run, and latest.json."""
        return self.root / "evals"

    @property
    def feedback(self) -> Path:
        """The compare tab's votes, one JSON line each."""
        return self.root / "feedback.jsonl"

    @property
    def ratings(self) -> Path:
        """The chat's thumbs up / down on answers, one JSON line each (tune/ratings.py)."""
        return self.root / "ratings.jsonl"

    @property
    def serve_settings(self) -> Path:
        """The app's adapter per mode ({"adapters": {"tuned": A, "hybrid": B}})."""
        return self.root / "serve.json"

    @property
    def docs(self) -> Path:
        """Where uploads go when the index names no documents folder of its own."""
        return self.root / "docs"
