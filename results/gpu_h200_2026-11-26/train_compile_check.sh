# train.py --compile on a GPU (bf16 autocast + the compiled decode step): does it run, and what does it save?
set -u
export PYTHONUNBUFFERED=1
python3 - <<'PY'
import dataclasses, shutil, torch
from bench import SHAPES, build_models
from model import save_model
device = "cuda" if torch.cuda.is_available() else "cpu"
cfg = dataclasses.replace(SHAPES[__import__("os").environ.get("SHAPE", "smollm2-135m")], vocab_size=49152)
model, _ = build_models(cfg, device, torch.float32, with_transformers=False)
save_model(model, "/tmp/m")
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(f".gpu_carry/tokenizer/{name}", "/tmp/m")
PY
for c in --compile ""; do
  echo "== train.py $c"
  timeout -k 5 ${LIMIT:-100} python3 train.py --model /tmp/m --dataset gsm8k --data-path .gpu_carry/gsm8k --steps ${STEPS:-4} \
    --prompts-per-step 2 --samples-per-prompt 16 --max-cot-tokens ${COT:-128} --eval-every ${STEPS:-4} --val-size 16 \
    --out-dir /tmp/o$c --overwrite $c 2>&1 | tr '\r' '\n' | grep -E "^step [0-9]+:|^done|Error|error" | cut -c1-260
  echo "== exit ${PIPESTATUS[0]}"
done
