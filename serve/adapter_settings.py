"""Which adapter each answer mode uses in `ragtune serve`: the admin's pick ("Use this adapter", WS/serve.json),
else serve/adapter_choice.py's rule; and the mode a chat opens in.

    settings = AdapterSettings(Path("ws"))
    settings.default_adapter("hybrid"), settings.set_default_adapter("demo", ("hybrid",))
"""

from __future__ import annotations

import json
from pathlib import Path

from generate.modes import ADAPTER_MODES
from ingest.files import write_text_atomic
from ingest.workspace import Workspace
from serve.adapter_choice import pick_adapter, preferred_mode
from serve.answer import AnswerError, list_adapters


class AdapterSettings:
    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)

    def _settings_path(self) -> Path:
        return Workspace(self.workspace).serve_settings

    def adapters(self) -> list[str]:
        return list_adapters(self.workspace)

    def _chosen_adapters(self) -> dict[str, str]:
        """What an admin picked with "Use this adapter" (WS/serve.json), per mode; older files hold one name."""
        try:
            saved = json.loads(self._settings_path().read_text())
        except (OSError, ValueError):
            return {}
        if isinstance(saved.get("adapters"), dict):
            return {m: n for m, n in saved["adapters"].items() if m in ADAPTER_MODES and isinstance(n, str)}
        return {m: saved["adapter"] for m in ADAPTER_MODES} if isinstance(saved.get("adapter"), str) else {}

    def default_adapter(self, mode: str = "hybrid") -> str | None:
        """The adapter `mode` answers with when a request names none: the admin's pick for that mode if it still
        exists, else serve.adapter_choice.pick_adapter ('default', else the newest adapter suited to the mode)."""
        chosen = self._chosen_adapters().get(mode)
        if chosen in self.adapters():
            return chosen
        return pick_adapter(self.workspace, mode)

    def default_mode(self) -> str:
        """The mode a chat opens in and the plain model name `ragtune` answers with: hybrid once its adapter's card
        records an evaluation on this workspace where hybrid was not below rag, else rag
        (serve.adapter_choice.preferred_mode)."""
        return preferred_mode(self.workspace, self.default_adapter("hybrid"))

    def default_adapters(self) -> dict[str, str | None]:
        return {m: self.default_adapter(m) for m in ADAPTER_MODES}

    def set_default_adapter(self, name: str, modes: tuple[str, ...] = ADAPTER_MODES) -> None:
        if name not in self.adapters():
            raise AnswerError(f"no adapter named {name!r}")
        if not modes or any(m not in ADAPTER_MODES for m in modes):
            raise AnswerError(f"an adapter is chosen for modes {' and '.join(ADAPTER_MODES)}, not {modes!r}")
        chosen = {**self._chosen_adapters(), **{m: name for m in modes}}  # other modes keep their own pick
        write_text_atomic(self._settings_path(), json.dumps({"adapters": chosen}))
