#!/usr/bin/env bash
# The README's GPU figures, about 15 minutes on one H200 (results/bench_gpu_2026-11-26.md):
#   1. bench.py --compile: our hard / soft / fuzzy rollouts, eager and compiled, against transformers' generate on
#      the same random weights, SmolLM2-135M and Llama-3.2-3B shapes, batch 32 and 256, CoT 128 + answer 32
#      (the paper's GSM8K budget). If compiling fails, the same without --compile.
#   2. bench.py's RLOO step of the 3B shape as train.py runs it (fp32 master weights, bf16 autocast, no activation
#      checkpointing), split into its parts, with peak memory and the update without prompt sharing beside it.
#   3. train.py, 20 steps on GSM8K with the paper's step (2 prompts x 32 samples, CoT 128, fuzzy) on one GPU, with a
#      Llama-3.2-3B-shaped model of random weights and SmolLM2's 49,152-token vocabulary and tokenizer (no 3B
#      weights can be had offline). A random model never answers correctly, but 58 of the 49,152 tokens hold a '}',
#      so a few % of its 32-token answers close the \boxed{ } and earn the format reward (10): most groups of 32
#      carry a signal and the update runs as in a real run.
#   4. the first 8 steps of that run again with --compile (compare run_compiled_metrics.jsonl with run_metrics.jsonl).
# Each part stops at its own limit and at the deadline (BUDGET_S seconds after the start, default 900); what
# finished is kept under OUTDIR.
#
#   bash tools/gpu_check.sh OUTDIR DATA_DIR TOKENIZER_DIR
# DATA_DIR: GSM8K as train.jsonl / test.jsonl; TOKENIZER_DIR: SmolLM2's tokenizer.json and tokenizer_config.json
# (from `python default_model.py`). The sizes can be overridden for a dry run on a CPU, e.g.
#   SHAPES=tiny BATCHES=2 COT=4 ANSWER=2 TRAIN_SHAPE=tiny STEPS=2 G=4 bash tools/gpu_check.sh /tmp/o DATA TOK
set -u
OUT=${1:?usage: bash tools/gpu_check.sh OUTDIR DATA_DIR TOKENIZER_DIR}
DATA=${2:?DATA_DIR}
TOK=${3:?TOKENIZER_DIR}
for f in "$DATA/train.jsonl" "$TOK/tokenizer.json" "$TOK/tokenizer_config.json"; do  # before 10 minutes of benches
  [ -f "$f" ] || { echo "tools/gpu_check.sh: $f not found (see the usage above)" >&2; exit 2; }
done
SHAPES=${SHAPES:-smollm2-135m llama-3.2-3b}
BATCHES=${BATCHES:-32,256}
COT=${COT:-128}
ANSWER=${ANSWER:-32}
REPEATS=${REPEATS:-2}
TRAIN_SHAPE=${TRAIN_SHAPE:-llama-3.2-3b}
STEPS=${STEPS:-20}
G=${G:-32}
RUN=${RUN:-/tmp/gsm8k-3b}
deadline=$((SECONDS + ${BUDGET_S:-900}))
mkdir -p "$OUT"
LOG=$OUT/log.txt
export PYTHONUNBUFFERED=1

part() {  # part NAME LIMIT_S CMD...: run CMD under the smaller of LIMIT_S and the time left; output to $LOG
  local name=$1 limit=$2 left=$((deadline - SECONDS)) t0=$SECONDS rc
  shift 2
  ((left < limit)) && limit=$left
  if ((limit < 20)); then echo "== $name: skipped, ${left} s left" | tee -a "$LOG"; return 1; fi
  echo "== $name (at most ${limit} s): $*" | tee -a "$LOG"
  timeout -k 20 -s INT "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  return $rc
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
  df -h /tmp | tail -1; } 2>&1 | tee -a "$LOG"

# 1. rollouts against transformers, eager and compiled
for shape in $SHAPES; do
  args=(tools/bench.py --shapes "$shape" --batch "$BATCHES" --cot "$COT" --answer "$ANSWER" --repeats "$REPEATS" --skip-train-step)
  part "rollouts $shape --compile" 240 python3 "${args[@]}" --compile --json "$OUT/bench_$shape.json" \
    || part "rollouts $shape (eager only)" 150 python3 "${args[@]}" --json "$OUT/bench_$shape.json"
done

# 2. one RLOO step of the 3B shape, in parts (the rollout benchmark before it is a token one)
part "RLOO step $TRAIN_SHAPE" 150 python3 tools/bench.py --shapes smollm2-135m --batch 2 --cot 2 --modes hard \
  --no-transformers --repeats "$REPEATS" --answer "$ANSWER" --train-shape "$TRAIN_SHAPE" --train-prompts 1 \
  --train-samples "$G" --train-cot "$COT" --no-activation-checkpointing --json "$OUT/bench_train_step.json"

# 3. the GSM8K run: a random model of the 3B shape with SmolLM2's vocabulary
python3 - "$TRAIN_SHAPE" "$TOK" "$RUN/model" <<'EOF' 2>&1 | tee -a "$LOG"
import dataclasses, shutil, sys, torch
from bench import SHAPES, build_models
from model import save_model
shape, tokenizer_dir, folder = sys.argv[1:]
cfg = dataclasses.replace(SHAPES[shape], vocab_size=49152)  # SmolLM2's tokenizer
device = "cuda" if torch.cuda.is_available() else "cpu"
model, _ = build_models(cfg, device, torch.bfloat16 if device == "cuda" else torch.float32, with_transformers=False)
save_model(model, folder)
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(f"{tokenizer_dir}/{name}", folder)
print(f"random {shape}-shaped model, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, in {folder}")
EOF
part "train.py $TRAIN_SHAPE shape, GSM8K, $STEPS steps" 300 python3 train.py --model "$RUN/model" --dataset gsm8k \
  --data-path "$DATA" --mode fuzzy --steps "$STEPS" --prompts-per-step 2 --samples-per-prompt "$G" \
  --max-cot-tokens "$COT" --eval-every "$STEPS" --val-size 16 --out-dir "$RUN/out" --overwrite
cp "$RUN/out/metrics.jsonl" "$OUT/run_metrics.jsonl" 2>/dev/null
rm -rf "$RUN/out"  # its last/ holds 36 GB (weights and AdamW state): two would not fit a 64 GB disk

# 4. the same run with --compile, a few steps: the compiled decode step under autocast, and its compilations
part "train.py --compile, $TRAIN_SHAPE shape, 8 steps" 240 python3 train.py --model "$RUN/model" --dataset gsm8k \
  --data-path "$DATA" --mode fuzzy --steps 8 --prompts-per-step 2 --samples-per-prompt "$G" \
  --max-cot-tokens "$COT" --eval-every 8 --val-size 16 --out-dir "$RUN/out-compiled" --overwrite --compile
cp "$RUN/out-compiled/metrics.jsonl" "$OUT/run_compiled_metrics.jsonl" 2>/dev/null

grep -h -E "^\| |^==|^RLOO step|^the same update|^peak|^device|^done" "$LOG" | tail -80
