#!/bin/bash
# On a lent GPU (device tool), from the repo root with .gpu-kit carried (evals/gpu_prepare.sh writes it):
# the training benchmark side by side with the plain loop, a larger token budget, a profile of ragtune's step, then
# generation with a LoRA adapter (batch 1 eager and CUDA-graphed, and 32 requests batched against one by one),
# then the reranker's training speed (issue 21).
# Every part has its own time limit so the whole call fits one 540 s run; results are also copied to $OUT.
# Smoke test here (no GPU): PYTHON=.venv/bin/python DEVICE=cpu STEPS=1 CONCURRENT=2 NEW_TOKENS=8 bash evals/gpu_session.sh
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
export PYTHONPATH=$PWD:${PYTHONPATH:-}
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
KIT=.gpu-kit
[ -f $KIT/assets/config.json ] || { echo "no $KIT: run evals/gpu_prepare.sh here first and carry .gpu-kit"; exit 2; }
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi") | tee $OUT/device.txt
${PYTHON:-python3} -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a $OUT/device.txt
bench() {  # name seconds args...
  local name=$1 secs=$2; shift 2
  echo "=== $name: $*"
  timeout "$secs" ${PYTHON:-python3} -m evals.bench_train --device ${DEVICE:-cuda} --random-weights --assets $KIT/assets \
    --dataset $KIT/benchdata --json "$@" ${STEPS:+--steps $STEPS} > "$OUT/$name.txt" 2> >(tr '\r' '\n' | grep -v '/step' > "$OUT/$name.err")
  echo "rc=$?"; grep -v '^{' "$OUT/$name.txt" | tail -5; tail -3 "$OUT/$name.err"
}
bench side_by_side 150 --steps 20
bench batch65k 75 --steps 10 --skip-plain --batch-tokens 65536
bench profile 60 --profile 5
grep -A40 'Name' "$OUT/profile.err" | head -30
# tuned/hybrid decode at batch 1 (eager with the adapter merged, and the step compiled into CUDA graphs with it),
# then 32 hybrid requests at once through the continuous batch against the same one after another
echo "=== generate with an adapter"
timeout 180 ${PYTHON:-python3} -m evals.bench_generate --device ${DEVICE:-cuda} --random-weights --assets $KIT/assets \
  --adapter --concurrent ${CONCURRENT:-32} --max-new-tokens ${NEW_TOKENS:-128} > "$OUT/generate_adapter.txt" 2> "$OUT/generate_adapter.err"
echo "rc=$?"; cat "$OUT/generate_adapter.txt"; tail -3 "$OUT/generate_adapter.err"
# tune-retriever's reranker (2 MiniLM layers, random weights) for 30 steps: the time of one pass over 2,000 questions
echo "=== reranker training"
${PYTHON:-python3} -c "import datasets" 2>/dev/null || { [ -d $KIT/wheels ] && ${PYTHON:-python3} -m pip install -q \
  --no-index --no-deps --no-compile --target /tmp/site $KIT/wheels/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site; }
timeout 60 ${PYTHON:-python3} -m evals.bench_reranker_train --device ${DEVICE:-cuda} --random-weights \
  --assets $KIT/minilm --groups $KIT/reranker_groups.jsonl --steps ${STEPS:-30} --json > "$OUT/reranker_train.txt" \
  2> "$OUT/reranker_train.err"
echo "rc=$?"; cat "$OUT/reranker_train.txt"; tail -3 "$OUT/reranker_train.err"
echo "elapsed ${SECONDS}s"
