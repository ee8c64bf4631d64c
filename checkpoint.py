"""The run folder: what train.py, evaluate.py and the other scripts write, and how none of it is ever lost.

Every file is written atomically (a temporary file or folder beside it, then a rename), so a crash, Ctrl-C or a
full disk at any moment leaves the old version or the new one, never half of each.
"""

import errno
import fcntl
import json
import math
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import torch

from distributed import save_optimizer_shards
from model import save_model


def atomic_write(path: str, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: readers, and a crash, only
    ever see the old file or the new one. A full disk raises OSError and leaves the old file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_", suffix=".part")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would make it: mkstemp's files are private to their owner
    mode, encoding = ("wb", None) if isinstance(data, bytes) else ("w", "utf-8")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def earlier_result(path: str, overwrite: bool, config: dict, same_keys, script: str) -> dict | None:
    """The result JSON already at a script's --output, so that a rerun keeps what it finished and adds the rest:
    None when there is none, or with --overwrite (said). Refused, in one line, when it is not such a result or
    was made with another configuration (any of `same_keys` of its "config" differs from `config`)."""
    if not os.path.exists(path):
        return None
    if overwrite:
        print(f"--overwrite: discarding the results in {path}", file=sys.stderr)
        return None
    redo = "use another --output, or --overwrite to discard it"
    try:
        with open(path) as f:
            old = json.load(f)
        old_config = old["config"]
        differ = [f"{key} {old_config[key]!r} there, {config[key]!r} now" for key in same_keys
                  if old_config[key] != config[key]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SystemExit(f"{script}: --output {path} exists but is not an {script} result ({type(e).__name__}: "
                         f"{e}); {redo}") from None
    if differ:
        raise SystemExit(f"{script}: --output {path} holds results of another configuration ({'; '.join(differ)}); "
                         f"{redo}")
    return old


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


# --------------------------------------------------------------------------- the run folder of train.py

RUN_FILES = ["metrics.jsonl", "samples.jsonl", "best", "last", "best.tmp", "last.tmp", "best.old", "last.old"]
CHECKPOINTS = ("last", "last.old", "best")  # where a resumable state can be, newest first


class RunLock:
    """One writer at a time: an exclusive lock on the file `path` (OUT_DIR/.lock for a run), held while this
    process lives. The OS releases it when the process ends, however it ends (kill -9 included), so a lock is
    never stale; the file names the holder for the next one who tries."""

    def __init__(self, path: str, what: str):
        self.file = open(path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise SystemExit(f"{what} is being written by {holder}: wait for it to end (or stop it), or choose "
                             "another output") from None
        self.file.truncate(0)
        self.file.write(f"PID {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self.file.flush()

    def release(self):
        self.file.close()


def refuse_links(folder: str, names) -> None:
    """A run folder someone handed over must not make us write outside it: a symbolic link where a run file
    goes would be followed by every write (and shutil.rmtree refuses to remove one)."""
    links = [os.path.join(folder, n) for n in names if os.path.islink(os.path.join(folder, n))]
    if links:
        raise SystemExit(f"refusing to write through symbolic links: {', '.join(links)}. A run folder holds plain "
                         "files and folders; remove the links (or use another --out-dir).")


def has_checkpoint(out_dir: str) -> bool:
    return any(os.path.exists(os.path.join(out_dir, n, "train_state.pt")) for n in CHECKPOINTS)


def finished_steps(out_dir: str) -> int:
    """The last training step metrics.jsonl records (0: none)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max((row["step"] for row in map(_row, f) if row and row.get("step", 0) >= 1), default=0)


def prepare_out_dir(out_dir: str, resume: bool, overwrite: bool) -> RunLock:
    """Lock OUT_DIR, then refuse to write over a run unless --resume (continue it) or --overwrite (delete it,
    saying what). A folder whose run stopped before it saved anything or finished a step is started over."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SystemExit(f"--out-dir {out_dir} is a file, not a folder: choose another --out-dir")
    try:
        os.makedirs(out_dir, exist_ok=True)
        lock = RunLock(os.path.join(out_dir, ".lock"), out_dir)
    except OSError as e:
        raise SystemExit(f"--out-dir {out_dir}: cannot write there ({e.strerror or e})") from None
    try:
        clear_out_dir(out_dir, resume, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def clear_out_dir(out_dir: str, resume: bool, overwrite: bool):
    refuse_links(out_dir, RUN_FILES)
    existing = [n for n in RUN_FILES if os.path.exists(os.path.join(out_dir, n))]
    if resume or not existing:
        return
    if not overwrite:
        if has_checkpoint(out_dir) or finished_steps(out_dir):
            raise SystemExit(f"{out_dir} already holds a run ({', '.join(existing)}). Continue it with --resume, "
                             f"start over with --overwrite (deletes those), or choose another --out-dir.")
        print(f"{out_dir} holds a run that stopped before its first step and saved nothing "
              f"({', '.join(existing)}): starting over", file=sys.stderr)
    else:
        print(f"--overwrite: deleting {', '.join(os.path.join(out_dir, n) for n in existing)}", file=sys.stderr)
    for name in existing:
        path = os.path.join(out_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def load_resume_state(out_dir: str) -> tuple[str, dict]:
    """(folder, train state) of the newest complete checkpoint: last/, else last.old/ (left by a crash between two
    renames), else an older best/ that still holds a state. Unreadable ones are named and skipped."""
    skipped = []
    for name in CHECKPOINTS:
        folder = os.path.join(out_dir, name)
        path = os.path.join(folder, "train_state.pt")
        if not os.path.exists(path):
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "GLOBAL" in str(e):  # it names a Python object to import and call: it could run code
                raise SystemExit(f"refusing to load {path}: it holds Python objects other than tensors, numbers, "
                                 "strings, lists and dicts, and unpickling them could run code. Resume only from "
                                 "checkpoints train.py wrote.") from None
            skipped.append(f"{path} is corrupt ({str(e).splitlines()[0][:120]})")
            continue
        except Exception as e:
            skipped.append(f"{path} is corrupt ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        missing = {"optimizer", "step", "args", "progress"} - set(state if isinstance(state, dict) else ())
        if missing or not os.path.exists(os.path.join(folder, "config.json")):
            skipped.append(f"{folder} is incomplete (missing {', '.join(sorted(missing)) or 'config.json'})")
            continue
        if skipped:
            print(f"warning: {'; '.join(skipped)}. Resuming from {folder} (step {state['step']}) instead.",
                  file=sys.stderr)
        return folder, state
    nothing = "; ".join(skipped) if skipped else f"no {out_dir}/last/train_state.pt"
    raise SystemExit(f"--resume: nothing to resume in {out_dir} ({nothing}): the run saved no checkpoint. Start "
                     "over with --overwrite instead of --resume.")


def disk_full(error: Exception, folder: str) -> bool:
    """ENOSPC, or a library error (torch, safetensors) raised while the disk had (almost) no space left."""
    if getattr(error, "errno", None) == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


def save_checkpoint(path: str, model, tokenizer_folder: str, state: dict | None = None, clean: bool = True):
    """Hugging Face folder + tokenizer files (+ train_state.pt for last/), written atomically: built in a temporary
    folder, then swapped in, so a crash or a full disk at any moment leaves the old or the new checkpoint whole.
    clean=False keeps what the ranks already wrote into the temporary folder (under --fsdp: optimizer/)."""
    tmp, old = path + ".tmp", path + ".old"
    folder, name = os.path.split(os.path.abspath(path))
    refuse_links(folder, [name, name + ".tmp", name + ".old"])
    if clean and os.path.exists(tmp):
        shutil.rmtree(tmp)
    try:
        save_model(model, tmp)
        for f in os.listdir(tokenizer_folder):
            if f.startswith("tokenizer") or f in ("special_tokens_map.json", "generation_config.json"):
                shutil.copy(os.path.join(tokenizer_folder, f), tmp)
        if state is not None:
            with open(os.path.join(tmp, "train_state.pt"), "wb") as f:  # a file object: a full disk is an OSError
                torch.save(state, f)
    except Exception as e:
        full = disk_full(e, folder)
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        kept = f"the previous checkpoint in {path} is intact" if os.path.exists(path) else f"{path} was not written"
        raise SystemExit(f"no space left on device while saving a checkpoint in {folder}; {kept}. "
                         "Free some space, then continue with --resume.") from None
    if os.path.exists(path):
        if os.path.exists(old):
            shutil.rmtree(old)  # a crash while it was being deleted leaves it; path is whole
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def save_run_checkpoint(path: str, policy, optimizer, tokenizer_folder: str, state: dict | None):
    """best/ or last/ of a run on any number of ranks. One process or DDP: the master holds the whole model and
    optimizer and writes them. FSDP: every rank takes part; the weights are gathered to the master, and last/'s
    AdamW state is written by every rank, sharded, into last/optimizer/ (none before the first step makes one)."""
    ranks = policy.ranks
    if policy.root is not None:
        if ranks.master and os.path.exists(path + ".tmp"):
            refuse_links(*os.path.split(os.path.abspath(path + ".tmp")))
            shutil.rmtree(path + ".tmp")
        ranks.barrier()  # the temporary folder is empty before any rank writes into it
        if state is not None and optimizer.state:
            save_optimizer_shards(policy.root, optimizer, os.path.join(path + ".tmp", "optimizer"))
    model = policy.full_model()
    if ranks.master:
        save_checkpoint(path, model, tokenizer_folder, state, clean=policy.root is None)
    ranks.barrier()


class RunLog:
    """metrics.jsonl and samples.jsonl, appended to a line at a time and flushed, so a crash loses no finished
    step. On resume, what was logged after the checkpoint's step is cut first, so the logs read as one run.
    Only the rank that writes the run folder writes them (write=False: every call does nothing)."""

    def __init__(self, out_dir: str, write: bool, resumed_step: int | None):
        self.files = {}
        if not write:
            return
        for name in ("metrics", "samples"):
            path = os.path.join(out_dir, f"{name}.jsonl")
            if resumed_step is not None:
                truncate_log(path, resumed_step)
            self.files[name] = open(path, "a")

    def write(self, name: str, *rows: dict):
        if name in self.files:
            self.files[name].writelines(json_line(row) for row in rows)
            self.files[name].flush()

    def close(self):
        for f in self.files.values():
            f.close()


def truncate_log(path: str, step: int):
    """Keep the lines of a JSONL log up to `step` (a resume replays what came after)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if (row := _row(line)) and row.get("step", math.inf) <= step
                and "summary" not in row]
    atomic_write(path, "".join(kept))


def _row(line: str) -> dict | None:
    """A JSON line as a dict; None for a line cut short by a crash."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None
