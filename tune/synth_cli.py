"""`ragtune synth`: the command-line face of tune.synth.synthesize. Only typer and the standard library are imported
here, so `ragtune --help` stays instant; the work is imported inside the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def synth_command(
    workspace: Path = typer.Option(Path("workspace"), "--workspace", "-w", envvar="RAGTUNE_WORKSPACE",
                                   help="Folder holding the index (default $RAGTUNE_WORKSPACE, else ./workspace); "
                                        "the dataset is written to WS/datasets/NAME."),
    teacher: str = typer.Option("extract", help="Question generator: extract (rules over answer spans, no model, "
                                "deterministic), local (the local base model writes questions), or the URL of an "
                                "OpenAI-compatible server (e.g. http://gpu-host:8000/v1)."),
    teacher_model: Optional[str] = typer.Option(None, help="With a URL teacher: the served model name; with "
                                                "--teacher local: a local model folder or hub id."),
    api_key: Optional[str] = typer.Option(None, envvar="RAGTUNE_TEACHER_KEY", help="Key for a URL teacher."),
    name: str = typer.Option("default", help="Dataset name (folder under WS/datasets)."),
    limit: Optional[int] = typer.Option(None, help="Use at most N source chunks (a seeded sample)."),
    distractors: int = typer.Option(2, help="Distractor chunks per RAFT example (hard negatives from retrieval)."),
    drop_oracle: float = typer.Option(0.1, help="Fraction of RAFT examples whose source chunk is left out."),
    no_oracle_target: str = typer.Option("refuse", help="Target when the source is left out: refuse (the refusal "
                                         "sentence) or answer (the bare answer: RAFT's memorisation variant)."),
    recipe: str = typer.Option("raft", help="raft: RAFT examples (question + source + distractors, cited answer) "
                               "plus closed-book ones, validation on held-out documents (for `hybrid`). facts: only "
                               "closed-book questions over every document, validation a recall sample of them, "
                               "to train with many epochs for `tuned` mode (see tune/README.md)."),
    facts_styles: str = typer.Option("question", help="With --recipe facts: which closed-book items train, "
                                     "comma-separated: question (wh-questions), cloze (complete a sentence of "
                                     "the document), or both (more phrasings of each fact; more steps)."),
    closed_book: bool = typer.Option(True, "--closed-book/--no-closed-book",
                                     help="Also write question-only examples (facts for `tuned` mode)."),
    recite: bool = typer.Option(False, "--recite/--no-recite",
                                help="Also write one recitation example per training chunk (the passage is the "
                                     "target, every token a label: facts for `tuned` mode; needs many epochs, "
                                     "see tune/README.md)."),
    include_groups: Optional[str] = typer.Option(None, help="Comma-separated access groups whose restricted "
                                                 "documents may be used. Default: none, because a tuned model "
                                                 "cannot enforce access rules."),
    seed: int = typer.Option(0, help="Seed for sampling, shuffling and the train/validation split."),
    round_trip_k: int = typer.Option(5, help="A question must retrieve its source chunk in the top K."),
    forms: int = typer.Option(4, help="Extract teacher: up to N questions per chunk whose answer is a clause, a "
                              "sentence or steps (why, how, yes/no, what is; tune/forms.py) next to the fact "
                              "questions; 0 = facts only."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (progress goes to stderr)."),
) -> None:
    """Make RAFT-style training data (questions, source chunk plus distractors, cited answers) from the index."""
    from tune.synth import restricted_warning, synthesize
    from tune.synth_config import SynthConfig

    groups = tuple(sorted({g.strip().lower() for g in (include_groups or "").split(",") if g.strip()}))
    config = SynthConfig(workspace=Path(workspace), name=name, teacher=teacher, teacher_model=teacher_model,
                         api_key=api_key, limit=limit, distractors=distractors, drop_oracle=drop_oracle,
                         no_oracle_target=no_oracle_target, closed_book=closed_book, recite=recite, recipe=recipe,
                         facts_styles=tuple(s.strip() for s in facts_styles.split(",") if s.strip()),
                         include_groups=groups, seed=seed, round_trip_k=round_trip_k, max_forms_per_chunk=forms)
    config.check()
    if groups:
        sys.stderr.write(f"warning: {restricted_warning(groups)}\n")
    report = synthesize(config, progress=True)
    for w in report.warnings:
        if not w.startswith("restricted documents"):
            sys.stderr.write(f"warning: {w}\n")
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    t = report.stats["total"]
    rate = f"{t['pass_rate']:.0%}" if t["pass_rate"] is not None else "-"
    sys.stdout.write(
        f"dataset {report.dataset}: {report.train} train / {report.val} val examples "
        f"({', '.join(f'{k} {v}' for k, v in sorted(report.by_kind.items()))}) from {report.chunks_used} chunks; "
        f"{report.kept} of {report.candidates} generated items kept ({rate}); removed: "
        f"{', '.join(f'{k} {v}' for k, v in report.filtered.items() if v) or 'none'}; {report.seconds:.1f}s\n"
        f"data card: {report.dataset / 'card.md'}\n")
