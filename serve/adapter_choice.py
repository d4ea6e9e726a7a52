"""Which LoRA adapter each mode answers with.

Two kinds of adapter suit the two adapter modes: one trained on RAFT data (`ragtune synth`, recipe raft) reads
retrieved passages well and belongs to `hybrid`; one trained on closed-book facts (`--recipe facts`) knows the
documents without them and belongs to `tuned`. One adapter for both is a compromise (README: "Does tuning help?").

- `parse_adapter_choice("fk3")` -> the same adapter for both modes;
  `parse_adapter_choice("hybrid=fk3,tuned=fkfacts2")` -> one per mode; `"fk3,tuned=fkfacts2"` -> fk3 except for tuned.
  `AdapterChoice.for_mode(mode)` answers; `str(choice)` writes it back in the same syntax.
- `pick_adapter(ws, mode)`: the adapter a mode uses when none is named: `default` if there is one, else the newest
  adapter whose training data suits the mode (facts -> tuned, anything else -> hybrid), else the newest adapter.

No torch here: the CLI and the evaluation import it at start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from generate.modes import ADAPTER_MODES, DEFAULT_MODE, SUITED_RECIPES


@dataclass(frozen=True)
class AdapterChoice:
    default: str | None = None  # for every adapter mode not in per_mode
    per_mode: dict[str, str] = field(default_factory=dict)

    def for_mode(self, mode: str) -> str | None:
        return self.per_mode.get(mode, self.default)

    def names(self) -> list[str]:
        return sorted({n for n in [self.default, *self.per_mode.values()] if n})

    def __str__(self) -> str:
        return format_adapters({m: self.for_mode(m) for m in ADAPTER_MODES})


def parse_adapter_choice(text: str | None, flag: str = "--adapter") -> AdapterChoice:
    """`NAME`, `MODE=NAME[,MODE=NAME]` or `NAME,MODE=NAME`; adapter names cannot hold ',' or '=' (see
    tune.adapters.check_name), so the forms never clash. Raises ValueError naming the flag."""
    text = (text or "").strip()
    if not text:
        return AdapterChoice()
    default, per_mode = None, {}
    for item in (part.strip() for part in text.split(",")):
        mode, eq, name = item.partition("=")
        if not item or (eq and not name.strip()):
            raise ValueError(f"{flag} {text!r}: expected NAME or MODE=NAME[,MODE=NAME] (modes: "
                             f"{', '.join(ADAPTER_MODES)})")
        if not eq:
            if default is not None:
                raise ValueError(f"{flag} {text!r} names two adapters for every mode ({default!r}, {item!r}); "
                                 "write MODE=NAME for one of them")
            default = item
            continue
        mode = mode.strip()
        if mode not in ADAPTER_MODES:
            raise ValueError(f"{flag} {text!r}: {mode!r} is not a mode that uses an adapter "
                             f"({' or '.join(ADAPTER_MODES)})")
        if mode in per_mode:
            raise ValueError(f"{flag} {text!r} names mode {mode} twice")
        per_mode[mode] = name.strip()
    return AdapterChoice(default, per_mode)


def format_adapters(by_mode: dict[str, str | None]) -> str:
    """{'tuned': 'a', 'hybrid': 'a'} -> 'a'; {'tuned': 'a', 'hybrid': 'b'} -> 'tuned=a,hybrid=b'; unused -> ''."""
    used = {m: n for m, n in by_mode.items() if n}
    if not used:
        return ""
    names = set(used.values())
    if len(names) == 1 and len(used) == len(by_mode):
        return names.pop()
    return ",".join(f"{m}={n}" for m, n in used.items())


def adapter_recipe(card: dict) -> str | None:
    """The synth recipe of the data an adapter was trained on: its card's `recipe`, or for older cards the
    dataset card beside the data it names (None when neither says)."""
    if card.get("recipe"):
        return card["recipe"]
    dataset = card.get("dataset")
    if not dataset:
        return None
    path = Path(dataset)
    for candidate in (path / "card.json", path.parent / "card.json"):
        try:
            return json.loads(candidate.read_text(encoding="utf-8")).get("recipe")
        except (OSError, ValueError):
            continue
    return None


def pick_adapter(workspace: Path, mode: str) -> str | None:
    """The adapter `mode` uses when none is named (see the module docstring); None when there is none."""
    from tune.adapters import list_adapter_cards

    cards = list_adapter_cards(workspace)
    if not cards:
        return None
    if any(a["name"] == "default" for a in cards):
        return "default"
    newest_first = sorted(cards, key=lambda a: (str(a["card"].get("created", "")), a["name"]), reverse=True)
    suited = [a for a in newest_first if adapter_recipe(a["card"]) in SUITED_RECIPES.get(mode, ())]
    return (suited or newest_first)[0]["name"]


def hybrid_not_below_rag(workspace: Path, card: dict) -> bool | None:
    """What the adapter's card says about hybrid against rag on this workspace: True when it records at least one
    evaluation run here (`ragtune eval` writes "<set>@<n> workspace") that asked both modes and every such run
    scored hybrid not below rag on F1 and on contains; False when one scored it below; None when none compares
    them."""
    scores = card.get("eval") or {}
    here = str(Path(workspace).resolve())
    tags = [key[: -len(" workspace")] for key, value in scores.items()
            if key.endswith(" workspace") and value == here]
    verdicts = []
    for tag in tags:
        pairs = [(scores.get(f"{tag} hybrid {m}"), scores.get(f"{tag} rag {m}")) for m in ("f1", "contains")]
        if all(isinstance(h, (int, float)) and isinstance(r, (int, float)) for h, r in pairs):
            verdicts.append(all(h >= r for h, r in pairs))
    return all(verdicts) if verdicts else None


def preferred_mode(workspace: Path, hybrid_adapter: str | None) -> str:
    """The mode a chat opens in and the API's plain model name answers with: 'hybrid' when the adapter hybrid
    would use has earned it on this workspace (`hybrid_not_below_rag`), else 'rag'."""
    if not hybrid_adapter:
        return DEFAULT_MODE
    from tune.adapters import list_adapter_cards

    card = next((a["card"] for a in list_adapter_cards(workspace) if a["name"] == hybrid_adapter), None)
    return "hybrid" if card is not None and hybrid_not_below_rag(workspace, card) else DEFAULT_MODE
