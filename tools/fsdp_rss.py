"""Peak RSS of each rank of a train.py run, and after which phase it was reached:
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 tools/fsdp_rss.py [train.py flags]"""
import os
import sys

main = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
sys.path.insert(0, main)
import train  # noqa: E402


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 2**20 for line in f if line.startswith(key))  # GiB


def probe(name, fn):
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        print(f"rank {os.environ.get('RANK', 0)} after {name}: RSS {status('VmRSS'):.2f} GiB, "
              f"peak so far {status('VmHWM'):.2f} GiB", flush=True)
        return out
    return wrapped


for name in ("__init__", "validate", "rollouts", "clip_and_step", "save"):
    setattr(train.Trainer, name, probe(name, getattr(train.Trainer, name)))
train.main(sys.argv[1:])
