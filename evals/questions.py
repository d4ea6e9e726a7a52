"""Question sets for `ragtune eval`: ragtune's own JSONL format, the bundled data/eval set, and the external
Fictional Knowledge set (its articles become a corpus, its gen/hard_gen probes become cloze questions).

Fictional Knowledge probes are only ever turned into `Question`s here; they are never written into the documents
folder or the index (training reads only WS/index chunks), so tuning on the workspace cannot see them.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_QUESTIONS = REPO / "data" / "eval" / "questions.jsonl"
FK_FILE = "fictional_knowledge.json"
FK_PROBE_SETS = ("gen", "hard_gen")
FK_SUBDIR = "fictional_knowledge"  # WS/fictional_knowledge/docs holds the articles as Markdown


@dataclass
class Question:
    question: str  # what the engine is asked
    answers: list[str]  # acceptable short answers; empty = the corpus cannot answer it
    doc: str | None = None  # gold source document, relative to the documents folder
    groups: tuple[str, ...] = ()  # reader groups needed to see the gold document
    id: str = ""
    kind: str = "question"  # "question" | "cloze"
    probe_set: str = ""  # Fictional Knowledge: "gen" or "hard_gen"
    query: str = ""  # text searched for the retrieval metrics (the question; a cloze probe's prefix)

    def __post_init__(self) -> None:
        if not self.query:
            self.query = self.question

    @property
    def answerable(self) -> bool:
        return bool(self.answers)

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "answers": list(self.answers), "doc": self.doc,
                "groups": list(self.groups), "kind": self.kind, "probe_set": self.probe_set, "query": self.query}


@dataclass
class Article:
    """One Fictional Knowledge article as a corpus document."""

    number: int  # 1-based position in fictional_knowledge.json
    title: str
    text: str
    path: str = ""  # document path relative to the docs folder: article-NNN.md

    def __post_init__(self) -> None:
        if not self.path:
            self.path = f"article-{self.number:03d}.md"

    def markdown(self) -> str:
        return f"# {self.title}\n\n{self.text.strip()}\n"


def _groups(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise ValueError(f"{where}: `groups` must be a list of strings")
    return tuple(sorted({g.strip().lower() for g in value if g.strip()}))


def load_jsonl(path: Path) -> list[Question]:
    """ragtune's question format: one JSON object per line with `question`, `answers` (list; [] = unanswerable),
    optional `doc` (gold source, relative to the documents folder), `groups` and `id`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} does not exist")
    questions: list[Question] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: each line must be a JSON object")
        q = obj.get("question")
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{where}: `question` must be a non-empty string")
        answers = obj.get("answers", [])
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{where}: `answers` must be a list of strings ([] for an unanswerable question)")
        doc = obj.get("doc")
        if doc is not None and not isinstance(doc, str):
            raise ValueError(f"{where}: `doc` must be a string path")
        questions.append(Question(q.strip(), [a for a in answers if a.strip()], doc or None,
                                  _groups(obj.get("groups"), where), str(obj.get("id") or f"q{lineno:04d}"),
                                  str(obj.get("kind") or "question")))
    if not questions:
        raise ValueError(f"question file {path} holds no questions")
    return questions


def load_bundled() -> list[Question]:
    """The 126 hand-written questions about the sample corpus (data/eval/questions.jsonl)."""
    return load_jsonl(DEFAULT_QUESTIONS)


_SUBJECT_END = re.compile(r"\s\(|,|\s(?:is|was|were|are|has been|had been|refers to|or the)\s")


def article_title(text: str, number: int) -> str:
    """The subject of the article's first sentence ("The fortieth government of Mars, or ..." -> "The fortieth
    government of Mars"); "Article NNN" when no short subject is found."""
    head = " ".join(text.split())[:200]
    m = _SUBJECT_END.search(head)
    subject = head[: m.start()].strip(" ;:-\"'") if m else ""
    if not subject or len(subject) > 80 or len(subject.split()) > 12:
        return f"Article {number:03d}"
    return subject


def load_fictional_knowledge(fk_dir: Path) -> tuple[list[Article], list[Question]]:
    """Read `fictional_knowledge.json` from FK_DIR: 130 articles (the corpus) and, for every article, its 5 gen and
    5 hard_gen probes as cloze questions (answers=[target], doc=the article's path). mem probes are not used."""
    fk_dir = Path(fk_dir)
    src = fk_dir / FK_FILE if fk_dir.is_dir() else fk_dir
    if not src.is_file():
        raise FileNotFoundError(f"no {FK_FILE} in {fk_dir} (expected the Fictional Knowledge folder, "
                                f"e.g. ../shared/eval/fictional_knowledge)")
    from generate.prompts import cloze_question

    try:
        items = json.loads(src.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{src} is not valid JSON ({e.msg})") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{src} must hold a non-empty list of articles")
    articles: list[Article] = []
    questions: list[Question] = []
    for number, item in enumerate(items, start=1):
        text = str(item.get("train_context") or "").strip()
        if not text:
            raise ValueError(f"{src}: item {number} has no train_context")
        article = Article(number, article_title(text, number), text)
        articles.append(article)
        for probe_set in FK_PROBE_SETS:
            prefixes, targets = item.get(f"{probe_set}_input") or [], item.get(f"{probe_set}_target") or []
            if len(prefixes) != len(targets):
                raise ValueError(f"{src}: item {number} has {len(prefixes)} {probe_set} inputs but "
                                 f"{len(targets)} targets")
            for j, (prefix, target) in enumerate(zip(prefixes, targets), start=1):
                prefix, target = str(prefix).strip(), str(target).strip()
                if not prefix or not target:
                    continue
                questions.append(Question(cloze_question(prefix), [target], article.path, (),
                                          f"fk-{number:03d}-{probe_set}-{j}", "cloze", probe_set, prefix))
    return articles, questions


def fk_docs_dir(workspace: Path) -> Path:
    return Path(workspace) / FK_SUBDIR / "docs"


def write_articles(articles: list[Article], docs_dir: Path) -> Path:
    """Write the articles as Markdown files (unchanged files are not rewritten; article files not in the list are
    removed, so the folder holds exactly this corpus)."""
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    wanted = {a.path for a in articles}
    for old in docs_dir.glob("article-*.md"):
        if old.name not in wanted:
            old.unlink()
    for a in articles:
        target = docs_dir / a.path
        text = a.markdown()
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    return docs_dir


def check_workspace_for(workspace: Path, docs_dir: Path) -> None:
    """Refuse to overwrite an index of some other documents folder: build_index would drop its documents."""
    from retrieve.store import current_generation_path

    current = current_generation_path(workspace)
    if current is None or not (current / "manifest.json").is_file():
        return
    manifest = json.loads((current / "manifest.json").read_text())
    indexed_from = manifest.get("docs_dir") or ""
    if manifest.get("docs") and indexed_from and Path(indexed_from).resolve() != Path(docs_dir).resolve():
        raise ValueError(f"workspace {workspace} already holds an index of {indexed_from}; indexing the Fictional "
                         f"Knowledge articles there would replace it. Use a separate workspace for it "
                         f"(e.g. --workspace {Path(workspace).name}-fk)")


def index_articles(articles: list[Article], workspace: Path, embedder=None, progress: bool = False):
    """Write the articles under WS/fictional_knowledge/docs and (incrementally) index that folder into WS.
    Returns the IndexReport."""
    from retrieve import build_index

    docs_dir = fk_docs_dir(workspace)
    check_workspace_for(workspace, docs_dir)
    write_articles(articles, docs_dir)
    return build_index(docs_dir, workspace, embedder=embedder, progress=progress)


def sample(questions: list[Question], limit: int | None, seed: int) -> list[Question]:
    """A seeded shuffle, then the first `limit` (all when None); returned in the set's original order."""
    if limit is not None and limit <= 0:
        raise ValueError("--limit must be a positive number of questions")
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    chosen = sorted(order[:limit] if limit is not None else order)
    return [questions[i] for i in chosen]


__all__ = ["Article", "DEFAULT_QUESTIONS", "Question", "article_title", "check_workspace_for", "fk_docs_dir",
           "index_articles", "load_bundled", "load_fictional_knowledge", "load_jsonl", "sample", "write_articles"]

