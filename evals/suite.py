"""The development suite: the whole user pipeline on every evaluation set, one table at the end.

    python -m evals.suite                                   # every set, the main job's budget (24 steps)
    python -m evals.suite --sets narrativeqa,pubmedqa --steps 96 --limit 60 --out runs/s96
    python -m evals.suite --synth forms=0                   # a recipe variant: any SynthConfig / TuneConfig field

Per set, in its own workspace OUT/<set>/ws: `ragtune index` of its documents -> `ragtune synth` (defaults, or the
--synth overrides) -> `ragtune tune` (fixed steps, the main job's lr) -> `ragtune eval` of base, rag and hybrid
with the same seed and limit. Then OUT/suite.md, suite.json and suite.png: contains, F1, refusal accuracy and the
degenerate-answer rates per set and mode, and contains / F1 per question kind (generate/question_kind.py: factoid
who/what/when/where/quantity against explain reason/procedure/yes_no/describe).

Sets: squad2, narrativeqa, pubmedqa, emanualqa and fictional_knowledge from --shared (../shared/eval; a missing
folder is reported in the table, not a crash), and data-eval (the bundled sample corpus and its questions).
A stage whose inputs are unchanged since the last run in OUT is reused (OUT/<set>/stages.json), so a second run
that only changes the evaluation does not train again. The sets' questions and probes are only ever asked, never
used for training: synth reads the indexed documents alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from evals.questions import DEFAULT_QUESTIONS, REPO, index_articles, load_fictional_knowledge
from evals.suite_report import KIND_GROUPS, write_suite_report

EXTERNAL = ("squad2", "narrativeqa", "pubmedqa", "emanualqa")
SETS = (*EXTERNAL, "fictional_knowledge", "data-eval")
ADAPTER = "suite"


@dataclasses.dataclass
class SuiteConfig:
    shared: Path = REPO.parent / "shared" / "eval"  # the external sets (../shared/eval)
    sets: tuple[str, ...] = SETS
    out: Path = REPO / "workspace" / "suite"  # one folder per set (its workspace and reports) + the suite table
    steps: int = 24  # LoRA steps (the main job's budget)
    lr: float = 2e-3  # the main job's learning rate
    limit: int = 100  # questions per external set (a seeded sample)
    fk_limit: int = 300  # Fictional Knowledge probes
    seed: int = 0
    modes: str = "base,rag,hybrid"
    max_new_tokens: int = 96  # long enough for a procedure or a conclusion; short answers stop early anyway
    synth: dict = dataclasses.field(default_factory=dict)  # SynthConfig overrides
    tune: dict = dataclasses.field(default_factory=dict)  # TuneConfig overrides
    fresh: bool = False  # redo every stage even when its inputs are unchanged
    model: str | None = None  # the generator to tune and answer with (a local folder); None = the packaged default


@dataclasses.dataclass
class SetInputs:
    name: str
    docs: Path | None  # a documents folder (None for Fictional Knowledge: its articles are written into WS)
    questions: Path | None
    fictional_knowledge: Path | None = None
    missing: str = ""  # why the set cannot run here


def set_inputs(name: str, shared: Path) -> SetInputs:
    if name == "data-eval":
        return SetInputs(name, REPO / "data" / "corpus", DEFAULT_QUESTIONS)
    folder = Path(shared) / name
    if name == "fictional_knowledge":
        ok = (folder / "fictional_knowledge.json").is_file()
        return SetInputs(name, None, None, folder, "" if ok else f"{folder}/fictional_knowledge.json not found")
    docs, questions = folder / "docs", folder / "questions.jsonl"
    missing = "" if docs.is_dir() and questions.is_file() else f"{docs} or {questions} not found"
    return SetInputs(name, docs, questions, missing=missing)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _coerce(value: str, current):
    if current is None:  # an optional field: a number when it reads as one, "none" for None
        if value.lower() == "none":
            return None
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def parse_overrides(pairs: list[str], cls) -> dict:
    """KEY=VALUE strings checked against the fields of a config dataclass and typed like their defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key in ("workspace", "name", "dataset"):
            raise ValueError(f"{pair!r}: expected KEY=VALUE with KEY a field of {cls.__name__} "
                             f"({', '.join(n for n in fields if n not in ('workspace', 'name', 'dataset'))})")
        default = fields[key].default
        if default is dataclasses.MISSING and fields[key].default_factory is not dataclasses.MISSING:
            default = fields[key].default_factory()
        out[key] = _coerce(value, default)
    return out


class _Stages:
    """Which stages of a set ran with which inputs (OUT/<set>/stages.json): a stage is redone when its fingerprint
    (which includes the fingerprints of the stages before it) changed or its output is gone, else reused. Keeps
    each stage's seconds and the list of reused ones."""

    def __init__(self, folder: Path, fresh: bool) -> None:
        self.path = folder / "stages.json"
        self.done = {} if fresh or not self.path.is_file() else json.loads(self.path.read_text())
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []

    def run(self, stage: str, fingerprint: str, output: Path, action) -> None:
        t = time.perf_counter()
        if self.done.get(stage) != fingerprint or not output.is_file():
            action()
            self.done[stage] = fingerprint
            self.path.write_text(json.dumps(self.done, indent=1))
        else:
            self.reused.append(stage)
        self.seconds[stage] = round(time.perf_counter() - t, 1)


def _log(msg: str) -> None:
    sys.stderr.write(f"[suite {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def run_set(inputs: SetInputs, config: SuiteConfig) -> dict:
    """index -> synth -> tune -> eval for one set; returns {set, report, results, seconds, reused}."""
    from retrieve import build_index
    from tune.synth import SynthConfig, synthesize
    from tune.train import TuneConfig, train_adapter

    from evals.run import EvalConfig, run_eval

    folder = Path(config.out) / inputs.name
    ws = folder / "ws"
    folder.mkdir(parents=True, exist_ok=True)
    stages = _Stages(folder, config.fresh)
    t = time.perf_counter()
    _log(f"{inputs.name}: index")
    if inputs.fictional_knowledge:
        articles, _ = load_fictional_knowledge(inputs.fictional_knowledge)
        report = index_articles(articles, ws, progress=True)
    else:
        report = build_index(inputs.docs, ws, progress=True)
    index_fp = _fingerprint(sorted(report.added + report.updated + report.unchanged), report.chunks)
    stages.seconds["index"] = round(time.perf_counter() - t, 1)

    synth_cfg = SynthConfig(workspace=ws, name=ADAPTER, seed=config.seed, **config.synth)
    synth_fp = _fingerprint(index_fp, synth_cfg.to_json())
    stages.run("synth", synth_fp, ws / "datasets" / ADAPTER / "train.jsonl",
               lambda: (_log(f"{inputs.name}: synth"), synthesize(synth_cfg, progress=True)))

    tune_cfg = TuneConfig(workspace=ws, dataset=ws / "datasets" / ADAPTER, name=ADAPTER, max_steps=config.steps,
                          lr=config.lr, max_val_examples=64, seed=config.seed,
                          **({"model": config.model} if config.model else {}), **config.tune)
    tune_fp = _fingerprint(synth_fp, {k: str(v) for k, v in dataclasses.asdict(tune_cfg).items()})
    stages.run("tune", tune_fp, ws / "adapters" / ADAPTER / "adapter_config.json",
               lambda: (_log(f"{inputs.name}: tune ({config.steps} steps)"), train_adapter(tune_cfg, progress=True)))

    _log(f"{inputs.name}: eval {config.modes}")
    t = time.perf_counter()
    is_fk = inputs.fictional_knowledge is not None
    out = run_eval(EvalConfig(workspace=ws, questions=inputs.questions, fictional_knowledge=inputs.fictional_knowledge,
                              modes=config.modes, adapter=ADAPTER, limit=config.fk_limit if is_fk else config.limit,
                              seed=config.seed, max_new_tokens=config.max_new_tokens, out=folder / "evals",
                              model=config.model,
                              command=f"evals.suite {inputs.name}"))
    stages.seconds["eval"] = round(time.perf_counter() - t, 1)
    return {"set": inputs.name, "report": out["report"], "n": out["n"], "results": out["results"],
            "seconds": stages.seconds, "reused": stages.reused}


def run_suite(config: SuiteConfig) -> dict:
    """Every set in turn (a failing set is recorded with its error and the others go on); writes the table."""
    from tqdm import tqdm

    rows = []
    for name in tqdm(config.sets, desc="suite", unit="set", file=sys.stderr):
        inputs = set_inputs(name, config.shared)
        if inputs.missing:
            _log(f"{name}: skipped, {inputs.missing}")
            rows.append({"set": name, "missing": inputs.missing})
            continue
        try:
            rows.append(run_set(inputs, config))
        except Exception as exc:  # one broken set must not lose the others' hours of work
            _log(f"{name}: failed: {type(exc).__name__}: {exc}")
            rows.append({"set": name, "error": f"{type(exc).__name__}: {exc}"})
    summary = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()},
               "kind_groups": KIND_GROUPS, "sets": rows}
    paths = write_suite_report(Path(config.out), summary)
    summary["files"] = paths
    return summary


def main(argv: list[str] | None = None) -> int:
    from tune.synth import SynthConfig
    from tune.train import TuneConfig
    from tune.train_cli import quiet_libraries

    quiet_libraries()

    p = argparse.ArgumentParser(prog="python -m evals.suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=SuiteConfig.shared, help="folder of the external sets")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    p.add_argument("--out", type=Path, default=SuiteConfig.out, help="workspaces, reports and the suite table")
    p.add_argument("--steps", type=int, default=SuiteConfig.steps)
    p.add_argument("--lr", type=float, default=SuiteConfig.lr)
    p.add_argument("--limit", type=int, default=SuiteConfig.limit, help="questions per set")
    p.add_argument("--fk-limit", type=int, default=SuiteConfig.fk_limit, help="Fictional Knowledge probes")
    p.add_argument("--seed", type=int, default=SuiteConfig.seed)
    p.add_argument("--modes", default=SuiteConfig.modes)
    p.add_argument("--max-new-tokens", type=int, default=SuiteConfig.max_new_tokens)
    p.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE", help="a SynthConfig field")
    p.add_argument("--tune", action="append", default=[], metavar="KEY=VALUE", help="a TuneConfig field")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    p.add_argument("--model", default=None, help="a local model folder to tune and answer with (default: the "
                   "packaged SmolLM2-135M-Instruct)")
    a = p.parse_args(argv)
    sets = tuple(s.strip() for s in a.sets.split(",") if s.strip())
    try:
        unknown = [s for s in sets if s not in SETS]
        if unknown or not sets:
            raise ValueError(f"--sets: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SETS)}")
        if a.steps < 1 or a.limit < 1 or a.fk_limit < 1:
            raise ValueError("--steps, --limit and --fk-limit must be positive")
        config = SuiteConfig(shared=a.shared, sets=sets, out=a.out, steps=a.steps, lr=a.lr, limit=a.limit,
                             fk_limit=a.fk_limit, seed=a.seed, modes=a.modes, max_new_tokens=a.max_new_tokens,
                             synth=parse_overrides(a.synth, SynthConfig), tune=parse_overrides(a.tune, TuneConfig),
                             fresh=a.fresh, model=a.model)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    summary = run_suite(config)
    sys.stdout.write(Path(summary["files"]["markdown"]).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
