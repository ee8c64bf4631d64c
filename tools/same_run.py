"""Do two train.py runs agree? The same metrics.jsonl values (times, throughput and the run's paths aside) and
bit-identical last/ weights: what a refactor must leave unchanged ("a move changes no number").

    python tools/same_run.py RUN_A RUN_B        # exit 0: the same; exit 1: prints every difference
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file

TIMING = {"rollout_s", "update_s", "tokens_per_s"}  # wall-clock figures: differ from run to run by nature


def metrics(run: str) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    # the closing summary names the run folder; everything else in it is compared
    return [{k: v for k, v in row.items() if k not in TIMING and k != "summary"} for row in rows]


def differences(a: str, b: str) -> list[str]:
    out = []
    rows_a, rows_b = metrics(a), metrics(b)
    if len(rows_a) != len(rows_b):
        out.append(f"metrics.jsonl: {len(rows_a)} rows against {len(rows_b)}")
    for ra, rb in zip(rows_a, rows_b):
        for key in sorted(ra.keys() | rb.keys()):
            if ra.get(key) != rb.get(key):
                out.append(f"step {ra.get('step')}: {key} {ra.get(key)!r} against {rb.get(key)!r}")
    wa, wb = (load_file(os.path.join(run, "last", "model.safetensors")) for run in (a, b))
    if wa.keys() != wb.keys():
        out.append(f"last/ weights: tensors {sorted(wa.keys() ^ wb.keys())[:5]} in one run only")
    differ = {name: (wa[name] - wb[name]).abs().max().item() for name in sorted(wa.keys() & wb.keys())
              if not torch.equal(wa[name], wb[name])}
    if differ:
        worst = max(differ, key=differ.get)
        out.append(f"last/ weights: {len(differ)} of {len(wa)} tensors differ, the most {worst} by {differ[worst]:.3g}")
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not all(os.path.isfile(os.path.join(r, f)) for r in argv
                                 for f in ("metrics.jsonl", "last/model.safetensors")):
        raise SystemExit("usage: python tools/same_run.py RUN_A RUN_B (two finished train.py run folders: "
                         "metrics.jsonl and last/model.safetensors in each)")
    found = differences(*argv)
    print("\n".join(found) if found else "the same: every metrics value (times aside) and every last/ weight")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
