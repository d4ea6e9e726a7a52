"""The options `ragtune ask` (ragtune_cli/main.py) and `ragtune eval` (evals/cli.py) share: both answer questions
with the engine (serve/answer.py), so the generator, adapter, focus and reranker are chosen the same way;
`ragtune serve` (serve/web_cli.py) takes the generator's four (--model, --dtype, --backend-url, --api-key) from here
too, and all three turn them into a generator with serve.answer.open_generator. Only typer is imported here.

    def ask(..., adapter: Optional[str] = ADAPTER, model: Optional[str] = MODEL, ...)
"""

from __future__ import annotations

import typer

ADAPTER = typer.Option(None, "--adapter", help="Adapter name under WS/adapters for tuned and hybrid, or one per mode: "
                       "hybrid=RAFT_NAME,tuned=FACTS_NAME. Default: 'default', else the newest adapter whose data "
                       "suits the mode.")
MODEL = typer.Option(None, "--model", help="Generator: a local model folder or hub id (default: the packaged "
                     "SmolLM2-135M-Instruct), or the served model name with --backend-url.")
BACKEND_URL = typer.Option(None, "--backend-url", help="An OpenAI-compatible server (vLLM, llama.cpp, Ollama, a "
                           "gateway) to answer with instead of the local model, e.g. http://gpu-host:8000/v1. Tuned "
                           "and hybrid answers ask it for the adapter's name as the model (vLLM: --enable-lora "
                           "--lora-modules NAME=WS/adapters/NAME).")
API_KEY = typer.Option(None, "--api-key", envvar="RAGTUNE_BACKEND_KEY", help="Key for --backend-url.")
DTYPE = typer.Option("auto", "--dtype", help="The local model's weights: auto (bfloat16 on a GPU, float32 on a CPU), "
                     "float32, bfloat16 or float16. bfloat16 on a CPU with AVX512-BF16 or AMX reads a prompt about "
                     "1.6x faster (docs/RESULTS.md) but its greedy answers differ a little from float32's.")
FOCUS_WINDOW = typer.Option(None, "--focus-window", help="Sentences kept either side of the one most like the "
                            "question in each chunk (a refused answer is asked again with whole chunks); -1 = whole "
                            "chunks. Default: 0 in hybrid mode, -1 in rag.")
NO_RERANK = typer.Option(False, "--no-rerank", help="Search (for rag and hybrid answers) without the workspace's "
                         "reranker (made by `ragtune tune-retriever`).")
