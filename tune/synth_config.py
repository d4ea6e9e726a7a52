"""What `ragtune synth` takes and gives back (tune/synth.py makes the dataset): `SynthConfig`, every setting with
its default and its checks, and `SynthReport`, the counts written to the dataset card. A module of its own so the
steps synth calls (tune/raft.py) read the config without importing synth itself.

    SynthConfig(workspace=Path("ws"), recipe="facts").check()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tune.qgen import STYLES

NO_ORACLE_TARGETS = ("refuse", "answer")
RECIPES = ("raft", "facts")


@dataclass
class SynthConfig:
    workspace: Path
    name: str = "default"  # the dataset folder: WS/datasets/<name>
    teacher: str = "extract"  # extract (rules, no model) | local (the local base model) | an http(s) URL
    teacher_model: str | None = None  # URL teacher: the served model name; local: a model folder/hub id
    api_key: str | None = None  # URL teacher only
    limit: int | None = None  # at most this many source chunks (a seeded sample)
    distractors: int = 2  # k distractor chunks per RAFT example
    drop_oracle: float = 0.1  # fraction of RAFT examples whose source chunk is left out (they teach refusing)
    no_oracle_target: str = "refuse"  # refuse: target is generate.prompts.REFUSAL; answer: the bare span (RAFT)
    closed_book: bool = True  # also emit a question-only example per item
    recipe: str = "raft"  # raft: the mix above, split by document | facts: see `facts_split`
    facts_styles: tuple[str, ...] = ("question",)  # facts recipe: closed-book items of these styles (cloze too?)
    recite: bool = False  # also emit one recitation example per training chunk (tune/recite.py; opt-in: unproven)
    include_groups: tuple[str, ...] = ()  # restricted chunks of these groups are used too (explicit opt-in)
    seed: int = 0
    round_trip_k: int = 5
    val_fraction: float = 0.1  # share of documents held out for validation (at least one)
    max_spans_per_chunk: int = 6  # extract/local: answer spans per chunk
    max_forms_per_chunk: int = 4  # extract: why / how / yes-no / what-is items per chunk (tune/forms.py); 0 = none
    max_endings_per_chunk: int | None = None  # extract: sentence-ending cloze items per chunk (None = every sentence
    # without another cloze item)
    questions_per_chunk: int = 4  # URL teacher: questions asked for per chunk
    styles: tuple[str, ...] = STYLES  # extract teacher: which item styles to make
    dedup_jaccard: float = 0.85
    max_span_df: float = 0.1  # spans found in more than this share of all chunks are not specific facts
    min_answer_chars: int = 2
    max_answer_chars: int = 80
    max_answer_words: int = 10
    max_form_answer_words: int = 60  # a form item's answer (a clause, a sentence, steps) may be this long

    def check(self) -> None:
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise ValueError(f"dataset name must be a plain folder name, not {self.name!r}")
        if not (self.teacher in ("extract", "local") or self.teacher.startswith(("http://", "https://"))):
            raise ValueError(f"--teacher must be extract, local or an http(s) URL, not {self.teacher!r}")
        if not 0.0 <= self.drop_oracle <= 1.0:
            raise ValueError(f"--drop-oracle must be between 0 and 1, not {self.drop_oracle}")
        if self.no_oracle_target not in NO_ORACLE_TARGETS:
            raise ValueError(f"--no-oracle-target must be refuse or answer, not {self.no_oracle_target!r}")
        if self.distractors < 0:
            raise ValueError("--distractors must be >= 0")
        if self.max_forms_per_chunk < 0:
            raise ValueError("--forms must be >= 0")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe must be raft or facts, not {self.recipe!r}")
        if self.recipe == "facts" and not self.closed_book:
            raise ValueError("--recipe facts is made of closed-book examples: leave out --no-closed-book")
        if not self.facts_styles or not set(self.facts_styles) <= set(STYLES):
            raise ValueError(f"--facts-styles must name cloze and/or question, not {','.join(self.facts_styles)!r}")
        if self.recipe == "facts" and self.teacher == "extract" and not set(self.facts_styles) & set(self.styles):
            raise ValueError(f"--facts-styles {','.join(self.facts_styles)} makes nothing: the extract teacher "
                             f"only writes {','.join(self.styles)} items")

    def to_json(self) -> dict:
        d = asdict(self)
        d["workspace"] = str(self.workspace)
        d["api_key"] = "***" if self.api_key else None
        d["include_groups"] = list(self.include_groups)
        d["styles"] = list(self.styles)
        d["facts_styles"] = list(self.facts_styles)
        return d


@dataclass
class SynthReport:
    dataset: Path
    train: int
    val: int
    filtered: dict[str, int]  # removed per filter
    candidates: int
    kept: int
    by_kind: dict[str, int]  # examples per kind (raft, raft_no_oracle, closed_book, recite)
    by_style: dict[str, int]  # kept items per style (cloze, question)
    stats: dict  # FilterStats.to_json per style and per rule
    teacher: str
    chunks_used: int
    restricted_excluded: int
    val_docs: list[str]
    content_hash: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["dataset"] = str(self.dataset)
        return d
