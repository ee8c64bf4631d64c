"""The ranks of a torchrun launch, on one machine or many: who computes which rows, and the one model handle
that train.py calls for generation and for the update, whether the model is whole (one process), replicated
(DDP) or sharded (FSDP2).

    python train.py ...                                                   # one process: rank 0 of 1
    torchrun --standalone --nproc_per_node 8 train.py ...                 # DDP on one machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 train.py ...  # 2 nodes

torchrun sets RANK (global), LOCAL_RANK (on this machine), WORLD_SIZE and LOCAL_WORLD_SIZE; nothing here needs
to know how many machines there are. Rank 0 alone writes the run folder, which must therefore be on a filesystem
every machine sees (each rank reads last/ on --resume).
"""

import os
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from model import Transformer


class Ranks:
    """This process's place in the launch. One process without torchrun is rank 0 of 1."""

    def __init__(self):
        self.rank, self.world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.master = self.rank == 0  # the one rank that prints and writes the run folder
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def start(self) -> str:
        """Join the process group (NCCL on GPUs, gloo on CPU), pick the device and the CPU threads -> the
        threads, said for the config line."""
        if self.world > 1:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
            if backend == "nccl":
                self.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
                torch.cuda.set_device(self.device)
        return pick_threads(self.device, self.local_world)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def rows(self, total: int) -> range:
        """This rank's rows of the step's `total`, a contiguous block (total splits evenly; train.py checks)."""
        n = total // self.world
        return range(self.rank * n, (self.rank + 1) * n)

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's x (all the same shape), concatenated in rank order."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    def all_reduce(self, x: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(x, op=op)
        return x

    def barrier(self):
        if self.world > 1:
            dist.barrier()


def pick_threads(device: str, local_world: int) -> str:
    """On CPU: OMP_NUM_THREADS if set, else this machine's cores shared among its ranks (one process per core
    group avoids oversubscription, which slows everything down on a shared machine)."""
    if device != "cpu":
        return f"threads={torch.get_num_threads()}"
    if os.environ.get("OMP_NUM_THREADS"):
        n, why = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n, why = max(1, cores // local_world), f"{cores} cores / {local_world} ranks"
    torch.set_num_threads(n)
    return f"threads={n} ({why})"


class Policy:
    """The model as train.py uses it, the same three calls whatever the launch:

    generating()            around rollouts and validation: eval mode, autocast; under FSDP the whole model is
                            gathered once for all decoding steps (see `unsharded`)
    call(fn, ...)           fn(model, ...) for generation: rollout.generate
    train_call(fn, ...)     fn(model, ...) with gradient, through DDP (which averages the ranks' gradients) or
                            FSDP's root unit: rollout.log_prob in the update
    micro_batches(rows, n)  the update's chunks, the same number on every rank, DDP's gradient sync on the last
    """

    def __init__(self, model: Transformer, ranks: Ranks, fsdp: bool):
        self.model, self.ranks = model, ranks  # self.model: the plain Transformer, for parameters and saving
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if "cuda" in ranks.device else nullcontext()
        self.root = shard(model, ranks.device) if fsdp else None
        self.ddp = None

    def replicate(self):
        """DDP, on more than one rank without FSDP. gradient_as_bucket_view: the gradients that exist now move
        into DDP's all-reduce buckets instead of living beside a flat copy (4 bytes a parameter less)."""
        if self.ranks.world > 1 and self.root is None:
            self.ddp = DDP(self.model, device_ids=[self.ranks.device] if "cuda" in self.ranks.device else None,
                           gradient_as_bucket_view=True)

    @contextmanager
    def generating(self):
        self.model.eval()
        with torch.no_grad(), self.autocast, (unsharded(self.root) if self.root is not None else nullcontext()):
            yield
        self.model.train()

    def call(self, fn, *args, **kwargs):
        if self.root is not None:
            return self.root(fn, *args, **kwargs)  # FSDP: inside the root unit's forward (RootUnit says why)
        return fn(self.model, *args, **kwargs)

    def train_call(self, fn, *args, **kwargs):
        with self.autocast:
            if self.root is not None:
                return self.root(fn, *args, **kwargs)
            return fn(self.ddp or self.model, *args, **kwargs)

    def micro_batches(self, rows: list[int], size: int):
        """(chunk of rows, weight) pairs: `rows` in chunks of `size`. Every rank must run the same number of
        forward/backward passes, or DDP and FSDP wait in a collective forever: a rank with fewer chunks runs
        zero-weight passes on row 0. DDP reduces the gradients once, after the last pass (no_sync before it);
        FSDP reduce-scatters after each, since holding the whole model's gradients is what it avoids."""
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        n = int(self.ranks.all_reduce(torch.tensor(len(chunks), device=self.ranks.device), dist.ReduceOp.MAX))
        for i in range(n):
            with self.ddp.no_sync() if self.ddp is not None and i < n - 1 else nullcontext():
                yield (chunks[i], 1.0) if i < len(chunks) else ([0], 0.0)

    def full_model(self) -> Transformer | None:
        """The whole model on the master rank (None on the others); under FSDP every rank must call it."""
        if self.root is None:
            return self.model if self.ranks.master else None
        return full_copy(self.model)


# --------------------------------------------------------------------------- FSDP (--fsdp)
# DDP keeps the fp32 weights, gradients and AdamW state on every rank: 16 bytes a parameter, 128 GB for an 8B
# model, more than a GPU holds. FSDP2 (torch.distributed.fsdp.fully_shard) splits all three over the W ranks:
# one unit per transformer block plus a root unit (embeddings, final norm, head). A unit's parameters are
# all-gathered just before it computes and freed after; its gradients are reduce-scattered (averaged over the
# ranks, as DDP does) after its backward, so each rank keeps and updates 1/W of everything.

class RootUnit(nn.Module):
    """FSDP's root unit: runs fn(model, ...) inside its forward.

    rollout.py reads the embedding matrix E outside model.forward (the soft inputs p E, the teacher-forced
    inputs, anchored_surrogate's gradient of Eq. 10). With the Transformer itself as the root unit, E would be
    sharded there, and FSDP would reduce-scatter the root's gradients as soon as the backward reached
    model.forward's input, before E's other gradients arrive: they would be lost (checked: E got no gradient).
    Inside this unit's forward E is whole, and since fn's inputs need no gradient, FSDP reduce-scatters the
    root's gradients after the whole backward."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def shard(model: Transformer, device: str) -> RootUnit:
    """fully_shard each transformer block, then the root unit (what is left: embeddings, final norm, head)."""
    if "cuda" in device:
        # Blocks: bf16 all-gathers and matrix products, gradients reduced in fp32 into fp32 master weights.
        # cast_forward_inputs=False keeps the residual stream in fp32, as under DDP's autocast (which still runs
        # and casts per op), so the blocks compute as they do under DDP, except that the RMSNorm gains are bf16.
        block_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                            cast_forward_inputs=False)
        # The root stays fp32: the head (tied to E in SmolLM2) and p E must be float32 (model.fp32_logits,
        # rollout.anchored_surrogate); a bf16 param_dtype would make the head's weight bf16 without a word.
        root_policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32,
                                           cast_forward_inputs=False)
    else:  # gloo on CPU: float32 throughout, as a CPU run without FSDP
        block_policy = root_policy = MixedPrecisionPolicy()
    for block in model.layers:
        fully_shard(block, mp_policy=block_policy)
    # the root's parameters stay gathered from its forward to the end of the backward, which needs them at once
    root = fully_shard(RootUnit(model), mp_policy=root_policy, reshard_after_forward=False)
    root(lambda model: None)  # FSDP makes the first unit that runs forward the root: this one, now
    root.reshard()
    return root


@contextmanager
def unsharded(root: RootUnit):
    """The whole model gathered for a rollout or a validation, freed after it.

    FSDP's default would gather each block again at every decoding step, and that cannot work here: each rank
    stops decoding when its own rows are done, and ranks have different numbers of validation problems, so
    ranks would wait in different collectives. Gathered here, at the same point on every rank, the decoding
    steps run no collective at all, and the model is all-gathered once per rollout instead of once per
    decoding step (measured: docs/training.md, "FSDP"). Cost: the whole model in the compute dtype while
    generating (bf16 on GPU: 2 bytes a parameter, 16 GB for 8B)."""
    units = [m for m in root.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    root.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        root.set_reshard_after_forward(True)                   # back to training: blocks free after forward,
        root.set_reshard_after_forward(False, recurse=False)   # the root keeps its parameters until backward


def full_copy(model: Transformer) -> Transformer | None:
    """The full weights gathered to rank 0's CPU, as a plain Transformer that save_model writes (None on the
    other ranks). Every rank must call it: it all-gathers each unit."""
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    with torch.device("meta"):  # no memory: load_state_dict(assign=True) takes the gathered tensors as they are
        copy = Transformer(model.cfg)
    copy.load_state_dict(weights, assign=True)
    if model.cfg.tie_embeddings:
        copy.lm_head.weight = copy.embed_tokens.weight
    return copy


def save_optimizer_shards(root: RootUnit, optimizer, folder: str):
    """Every rank writes its shard of the AdamW state into folder (torch.distributed.checkpoint)."""
    dcp.save({"optimizer": get_optimizer_state_dict(root, optimizer)}, checkpoint_id=folder)


def load_optimizer_shards(root: RootUnit, optimizer, folder: str):
    """Every rank reads its shard of the AdamW state. Call it before any gradient exists: the template that
    get_optimizer_state_dict makes for the loaded values is the state of one AdamW step with lr 0 on zero
    gradients, which it only takes on an optimizer without state and without gradients."""
    state = {"optimizer": get_optimizer_state_dict(root, optimizer)}
    dcp.load(state, checkpoint_id=folder)
    set_optimizer_state_dict(root, optimizer, state["optimizer"])


def check_fsdp(args, state: dict | None, world: int):
    """--fsdp needs ranks; a run resumes the way it was saved: with or without FSDP, on as many ranks under FSDP."""
    if args.fsdp and world < 2:
        raise SystemExit("--fsdp shards the model over ranks: launch with torchrun --nproc_per_node N (N >= 2), or "
                         "train one process without --fsdp")
    if state is None:
        return
    saved_world = state["optimizer"].get("fsdp_world")  # only FSDP checkpoints have it
    if (saved_world is not None) != args.fsdp:
        how = "with --fsdp" if saved_world else "without --fsdp"
        raise SystemExit(f"{args.out_dir}/last was saved by a run {how} (its AdamW state is "
                         f"{'sharded over ranks' if saved_world else 'one file'}): resume it {how}")
    if saved_world is not None and saved_world != world:
        raise SystemExit(f"{args.out_dir}/last holds AdamW state sharded over {saved_world} ranks: resume with "
                         f"torchrun --nproc_per_node {saved_world} (this launch has {world})")
