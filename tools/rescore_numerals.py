"""Rescore evaluate.py outputs with the lab task's numeral rule (data.is_correct(numeral_only=True)).

    python tools/rescore_numerals.py out-replicate-cpu/eval/*.json

Made for the replication of commit 6e6fe63 (results/replicate_cpu_withdrawn/, lenient reward): its trained models' correct
answers turned out to be the question's own expression boxed ("17 - 9"), which Math-Verify computes. This prints,
per file and setting, pass@1 as scored then and with only numeral answers counted.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import is_numeral  # noqa: E402

SETTINGS = ("hard-greedy", "hard-sample", "soft-sample", "fuzzy-sample")

print("| evaluation | " + " | ".join(f"{s} pass@1 % (as scored → numerals only)" for s in SETTINGS) + " |")
print("|---|" + "---|" * len(SETTINGS))
for path in sys.argv[1:]:
    problems = json.load(open(path))["problems"]
    cells = []
    for setting in SETTINGS:
        generations = [g for p in problems for g in p["generations"].get(setting, [])]
        correct = [g for g in generations if g["correct"]]
        numeral = [g for g in correct if g["extracted"] and is_numeral(g["extracted"])]
        cells.append(f"{100 * len(correct) / len(generations):.1f} → {100 * len(numeral) / len(generations):.1f}")
    print(f"| {os.path.basename(path)} | " + " | ".join(cells) + " |")
