"""The run folder: what train.py, evaluate.py and the other scripts write, and how none of it is ever lost.

Every file is written atomically (a temporary file or folder beside it, then a rename), so a crash, Ctrl-C or a
full disk at any moment leaves the old version or the new one, never half of each.
"""

import json
import math
import os
import signal
import sys
import tempfile
import threading
import time


def atomic_write(path: str, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: readers, and a crash, only
    ever see the old file or the new one. A full disk raises OSError and leaves the old file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w", **({} if isinstance(data, bytes) else
                                                                         {"encoding": "utf-8"})) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def json_line(row: dict) -> str:
    """One JSON line. JSON has no NaN or inf: such values are written as null and listed under "nonfinite"."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        row = {**{k: None if k in bad else v for k, v in row.items()}, "nonfinite": bad}
    return json.dumps(row, allow_nan=False) + "\n"


class StopSignal:
    """SIGINT (Ctrl-C) and SIGTERM (a job scheduler, `kill`), as a context manager.

    finish=True (train.py): the first signal only sets `signum`, so the current step can finish and be saved;
    another one a second or more later exits at once. Under torchrun, Ctrl-C reaches each worker twice (from the
    terminal and from the launcher): the duplicate within a second is ignored.
    finish=False (evaluate.py): either signal raises KeyboardInterrupt at once; what was saved stays saved."""

    def __init__(self, finish: bool, what: str = "this step"):
        self.finish, self.what = finish, what
        self.signum, self.since, self.previous = 0, 0.0, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def handle(self, signum, frame):
        if not self.finish:
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        if self.signum:
            if time.time() - self.since < 1:
                return
            print(f"\n{name} again: stopping now; last/ keeps the previous checkpoint", file=sys.stderr, flush=True)
            raise SystemExit(128 + signum)
        self.signum, self.since = signum, time.time()
        print(f"\n{name}: finishing {self.what}, then saving last/ (send it again to stop at once)",
              file=sys.stderr, flush=True)
