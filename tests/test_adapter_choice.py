"""Which adapter each mode answers with: the --adapter syntax (one name, or one per mode), the automatic pick by
the recipe of an adapter's training data, and the app's per-mode choice saved in WS/serve.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from serve.adapter_choice import (AdapterChoice, adapter_recipe, format_adapters, parse_adapter_choice,
                                  pick_adapter)


def fake_adapter(ws: Path, name: str, created: str, recipe: str | None = None, dataset: Path | None = None) -> None:
    """An adapter folder as far as listing and picking go (no weights: nothing here loads it)."""
    folder = ws / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    card = {"name": name, "created": created, "dataset": str(dataset) if dataset else None}
    if recipe:
        card["recipe"] = recipe
    (folder / "card.json").write_text(json.dumps(card))


def test_one_name_or_one_per_mode_and_back():
    assert parse_adapter_choice(None) == AdapterChoice() and parse_adapter_choice("  ").for_mode("tuned") is None
    one = parse_adapter_choice("fk3")
    assert one.for_mode("tuned") == one.for_mode("hybrid") == "fk3" and str(one) == "fk3"
    both = parse_adapter_choice(" hybrid=fk3 , tuned=fkfacts2 ")
    assert (both.for_mode("hybrid"), both.for_mode("tuned")) == ("fk3", "fkfacts2")
    assert str(both) == "tuned=fkfacts2,hybrid=fk3" and parse_adapter_choice(str(both)) == both
    mixed = parse_adapter_choice("fk3,tuned=fkfacts2")
    assert (mixed.for_mode("hybrid"), mixed.for_mode("tuned"), mixed.names()) == ("fk3", "fkfacts2",
                                                                                  ["fk3", "fkfacts2"])
    assert parse_adapter_choice("hybrid=fk3").for_mode("tuned") is None  # tuned falls back to the automatic pick
    assert format_adapters({"tuned": "a", "hybrid": "a"}) == "a" and format_adapters({"hybrid": None}) == ""
    for bad, says in [("a,b", "two adapters"), ("closed=a", "'closed' is not a mode"), ("tuned=", "expected"),
                      ("tuned=a,tuned=b", "twice"), ("a,,b", "expected")]:
        with pytest.raises(ValueError, match=says) as e:
            parse_adapter_choice(bad)
        assert "--adapter" in str(e.value)


def test_the_automatic_pick_follows_the_recipe_then_age(tmp_path):
    ws = tmp_path / "ws"
    assert pick_adapter(ws, "hybrid") is None
    fake_adapter(ws, "raft-old", "2026-11-01T10:00:00+0000", "raft")
    fake_adapter(ws, "zz-raft", "2026-11-02T10:00:00+0000", "raft")
    assert pick_adapter(ws, "hybrid") == pick_adapter(ws, "tuned") == "zz-raft"  # no facts adapter: newest for both
    data = tmp_path / "facts-data"
    data.mkdir()
    (data / "card.json").write_text(json.dumps({"recipe": "facts"}))
    fake_adapter(ws, "facts-older-card", "2026-10-01T10:00:00+0000", dataset=data)  # recipe read from the dataset
    assert adapter_recipe(json.loads((ws / "adapters" / "facts-older-card" / "card.json").read_text())) == "facts"
    assert pick_adapter(ws, "tuned") == "facts-older-card"  # older, but trained on facts
    assert pick_adapter(ws, "hybrid") == "zz-raft"  # alphabetical order no longer decides: creation time does
    fake_adapter(ws, "default", "2020-01-01T00:00:00+0000", "facts")
    assert pick_adapter(ws, "hybrid") == pick_adapter(ws, "tuned") == "default"  # an adapter named default wins


def test_the_app_keeps_one_adapter_per_mode(tmp_path):
    from serve.answer import AnswerError
    from serve.server import Ragtune, ServeConfig

    ws = tmp_path / "ws"
    fake_adapter(ws, "raft1", "2026-11-02T10:00:00+0000", "raft")
    fake_adapter(ws, "facts1", "2026-11-01T10:00:00+0000", "facts")
    service = Ragtune(ServeConfig(workspace=ws), generator=SimpleNamespace(name="fake"))
    assert service.settings.default_adapters() == {"tuned": "facts1", "hybrid": "raft1"}
    service.settings.set_default_adapter("raft1", ("tuned",))
    assert service.settings.default_adapters() == {"tuned": "raft1", "hybrid": "raft1"}
    assert json.loads((ws / "serve.json").read_text()) == {"adapters": {"tuned": "raft1"}}  # hybrid stays automatic
    service.settings.set_default_adapter("facts1")
    assert service.settings.default_adapters() == {"tuned": "facts1", "hybrid": "facts1"}
    (ws / "serve.json").write_text(json.dumps({"adapter": "raft1"}))  # the single-name file of earlier versions
    assert service.settings.default_adapters() == {"tuned": "raft1", "hybrid": "raft1"}
    with pytest.raises(AnswerError, match="no adapter named 'nope'"):
        service.settings.set_default_adapter("nope")
    with pytest.raises(AnswerError, match="not"):
        service.settings.set_default_adapter("raft1", ("rag",))
    assert service.answers.model_ids()[-1] == "ragtune-hybrid:raft1"
    assert service.answers.parse_model("ragtune-tuned") == ("tuned", None)  # the API resolves it per mode at answer time


def test_chat_and_plain_model_name_open_in_hybrid_once_it_has_earned_it(tmp_path):
    from serve.server import Ragtune, ServeConfig
    from tune.adapters import update_card

    ws = tmp_path / "ws"
    service = Ragtune(ServeConfig(workspace=ws), generator=SimpleNamespace(name="fake"))
    assert service.settings.default_mode() == "rag" and service.answers.parse_model("ragtune") == ("rag", None)  # no adapter yet
    fake_adapter(ws, "raft1", "2026-11-02T10:00:00+0000", "raft")
    assert service.settings.default_mode() == "rag"  # an adapter, but no evaluation on this workspace says it helps
    here = str(ws.resolve())
    update_card(ws, "raft1", {"data-eval@126 rag f1": 0.30, "data-eval@126 rag contains": 0.40,
                              "data-eval@126 hybrid f1": 0.35, "data-eval@126 hybrid contains": 0.40,
                              "data-eval@126 workspace": here})
    assert service.settings.default_mode() == "hybrid" and service.answers.parse_model("ragtune") == ("hybrid", None)
    assert service.answers.model_ids()[0] == "ragtune"
    update_card(ws, "raft1", {"other@10 rag f1": 0.5, "other@10 rag contains": 0.5, "other@10 hybrid f1": 0.6,
                              "other@10 hybrid contains": 0.4, "other@10 workspace": here})
    assert service.settings.default_mode() == "rag"  # one evaluation here scored hybrid below rag (contains)
    update_card(ws, "raft1", {"other@10 workspace": "/elsewhere"})  # that one ran on another workspace
    assert service.settings.default_mode() == "hybrid"
