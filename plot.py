"""Training curves from train.py's metrics.jsonl, as one PNG (matplotlib is an optional dependency).

    python plot.py out/metrics.jsonl [out-soft/metrics.jsonl ...] --output curves.png
"""

import argparse
import json
import os

PANELS = [("reward", "mean reward"), ("val_accuracy", "greedy validation accuracy"),
          ("no_signal_groups", "groups with no reward spread"), ("cot_len", "CoT length (tokens)"),
          ("cot_entropy", "CoT entropy (nats)"), ("grad_norm", "gradient norm")]


def read_metrics(path: str) -> dict[int, dict]:
    """step -> metrics; a resumed run may repeat steps after its last checkpoint, and the later line wins."""
    rows = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["step"], {}).update(row)
    return dict(sorted(rows.items()))


def main():
    ap = argparse.ArgumentParser(description="Plot train.py metrics.")
    ap.add_argument("metrics", nargs="+", help="metrics.jsonl files, one curve each")
    ap.add_argument("--output", default="curves.png")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plot.py needs matplotlib: pip install matplotlib")
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for path in args.metrics:
        rows = read_metrics(path)
        label = os.path.basename(os.path.dirname(os.path.abspath(path)))
        for ax, (key, title) in zip(axes.flat, PANELS):
            points = [(s, r[key]) for s, r in rows.items() if key in r]
            if points:
                ax.plot(*zip(*points), marker="o" if key == "val_accuracy" else None, label=label)
            ax.set_title(title)
            ax.set_xlabel("step")
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
