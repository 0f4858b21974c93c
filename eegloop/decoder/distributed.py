"""Data-parallel training of a network: PyTorch DDP (``torch.distributed``), launched the way ``torchrun`` launches.

A group model learns from many subjects' epochs; one machine's cores, or several machines, share the work. Nothing
here schedules processes itself: torch's elastic launcher (the engine behind ``torchrun``) starts the ranks
(``spawn``), runs the rendezvous (``c10d``) and reports a rank's failure; ``DistributedDataParallel`` averages the
gradients. What eegloop adds is the plan every rank follows, so that N ranks train the very network one process
trains:

- the epochs live in two ``.npy`` files (``X.npy``, ``y.npy``) that every rank maps read-only and reads only its
  shard of: the same permutation of the epochs on every rank (seeded by epoch), each global batch of
  ``batch_size`` epochs split into ``world_size`` contiguous shards. DDP averages the ranks' gradients, which is
  the gradient of the mean loss over the global batch: one process with the same ``batch_size`` computes the same
  step (to floating-point summation order) for a network without batch statistics or dropout. Batch normalisation
  on the CPU normalises each rank's shard by its own statistics (``SyncBatchNorm`` needs a GPU), and dropout draws
  its own masks on each rank: such networks train alike, not bit for bit.
- rank 0 writes a checkpoint (weights, optimiser, epoch, losses) after every epoch, atomically; a rerun with the
  same checkpoint file continues after its last finished epoch (``torch.load(weights_only=True)``: nothing in it
  is executed).
- on one machine the rendezvous, the process group's store and gloo's sockets stay on 127.0.0.1
  (``GLOO_SOCKET_IFNAME=lo`` unless set); across machines a lab names its rendezvous endpoint (``--nnodes``,
  ``--rdzv-endpoint HOST:PORT``) and every node runs the same command, each seeing the same data folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from .._logging import logger
from ..errors import EegloopError

__all__ = ["Launch", "FitPlan", "FitOutcome", "fit_data_parallel", "write_training_data", "check_checkpoint",
           "check_ranks_here", "ranks_here"]

_ENDPOINT = re.compile(r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


@dataclass(frozen=True)
class Launch:
    """Where the ranks run: ``nproc`` processes on each of ``nnodes`` machines (torchrun's ``--nproc-per-node``,
    ``--nnodes``, ``--rdzv-endpoint``, ``--rdzv-id``, ``--local-addr``, ``--max-restarts``)."""

    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: Optional[str] = None  # HOST:PORT; None on one machine: 127.0.0.1 and a free port
    rdzv_id: str = "eegloop-pretrain"
    local_addr: Optional[str] = None  # this node's address as the others reach it; 127.0.0.1 on one machine
    backend: str = "auto"  # gloo on the CPU, nccl with GPUs
    max_restarts: int = 0
    join_timeout_s: int = 300  # how long the rendezvous waits for every node before giving up (torchrun's 600)

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def check(self) -> None:
        """ValueError, naming the option, for a launch that cannot run."""
        for name in ("nproc", "nnodes", "max_restarts", "join_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "max_restarts" else 1):
                option = {"join_timeout_s": "rdzv-timeout"}.get(name, name.replace("_", "-"))
                raise ValueError(f"--{option} must be a whole number of at least "
                                 f"{0 if name == 'max_restarts' else 1}, not {v!r}")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"--backend must be auto, gloo or nccl, not {self.backend!r}")
        if self.rdzv_endpoint is not None:
            m = _ENDPOINT.match(self.rdzv_endpoint)
            if not m or not 0 < int(m.group(2)) < 65536:
                raise ValueError(f"--rdzv-endpoint must be HOST:PORT (a port from 1 to 65535), "
                                 f"not {self.rdzv_endpoint!r}")
            import socket

            try:  # a host nobody can resolve is one line now, not a connection retried until the timeout
                socket.getaddrinfo(m.group(1).strip("[]"), int(m.group(2)))
            except (socket.gaierror, UnicodeError) as exc:
                raise ValueError(f"--rdzv-endpoint: cannot resolve {m.group(1)!r} "
                                 f"({getattr(exc, 'strerror', None) or exc})") from None
        elif self.nnodes > 1:
            raise ValueError("--nnodes above 1 needs --rdzv-endpoint HOST:PORT: the address every node meets at")
        if not self.rdzv_id or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.rdzv_id):
            raise ValueError(f"--rdzv-id must be 1-64 letters, digits, '.', '_' or '-', not {self.rdzv_id!r}")


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_ranks_here(nproc: int) -> None:
    """ValueError (naming ``--nproc``) for more ranks than this machine has GPUs or CPU cores: each rank is a whole
    PyTorch process (~0.5 GB), so more only thrash, and a thousand exhaust the memory (the library's
    :class:`Launch` leaves oversubscribing to its caller)."""
    most = ranks_here()
    if nproc > most:
        raise ValueError(f"--nproc: {nproc} ranks, but this machine has {most} "
                         f"{'GPU' if _gpus() else 'CPU core'}{'s' * (most != 1)} for them (at most {most} here)")


def ranks_here() -> int:
    """The most ranks this machine runs: one per GPU, else one per CPU core it may use (at least 2: two ranks
    share a single core, slowly, for a test of the launch)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return _gpus() or max(2, cores)


def check_checkpoint(path: str | Path, plan: Optional["FitPlan"] = None, kind: str | None = None) -> None:
    """ValueError (naming ``--checkpoint``) unless ``path`` is a new file in an existing folder or a checkpoint
    this module wrote (read with ``torch.load(weights_only=True)``: tensors and numbers only, nothing executed)
    and, given ``plan``, one of ``plan``'s network (its weights load into it) written for the same training (data
    and settings: :func:`training_identity`), with no more epochs than ``plan`` asks for; given ``kind`` (the CLI,
    before any epoch is loaded), one of that kind of network."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"--checkpoint: {p} is a folder (give a file, e.g. {p / 'pretrain.pt'})")
    if not p.parent.is_dir():
        raise ValueError(f"--checkpoint: the folder {p.parent} does not exist")
    if not p.exists():
        return
    import torch

    try:
        saved = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the file is, one line naming the option
        raise ValueError(f"--checkpoint: {p} is not a checkpoint eegloop wrote ({type(exc).__name__}); "
                         "give a new file name to start afresh") from None
    if not isinstance(saved, dict) or not {"model", "optimizer", "epochs_done", "losses"} <= set(saved):
        raise ValueError(f"--checkpoint: {p} is not a checkpoint eegloop wrote (no model, optimizer, epochs_done, "
                         "losses); give a new file name to start afresh")
    held = saved.get("kind")
    if kind is not None and held and held != kind:
        raise ValueError(f"--checkpoint: {p} holds a {held} network's weights, not {kind}'s; give a new file name "
                         "to start afresh")
    if plan is None:
        return
    from .methods import build_model

    try:
        build_model(plan.model_config).load_state_dict(saved["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--checkpoint: {p} holds another network's weights ({first}); give a new file name "
                         "to start afresh") from None
    if plan.identity and saved.get("identity") != plan.identity:
        raise ValueError(f"--checkpoint: {p} was written by another training (other subjects, sessions, seed or "
                         "settings); give a new file name to start afresh, or rerun the command that wrote it")
    if int(saved["epochs_done"]) > plan.epochs:
        raise ValueError(f"--checkpoint: {p} holds {int(saved['epochs_done'])} finished epochs, more than the "
                         f"{plan.epochs} asked for (--max-epochs); give a new file name, or at least that many")


@dataclass(frozen=True)
class FitPlan:
    """What every rank trains: the network (its ``get_config()``: see :func:`eegloop.decoder.methods.build_model`),
    the epochs over the data, the global batch (split evenly over the ranks), Adam's learning rate, the gradient
    clip, the seed, and the checkpoint file (None: none)."""

    model_config: dict
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-4
    clip: float = 1.0
    seed: int = 0
    checkpoint: Optional[str] = None
    identity: str = ""  # the data and settings trained on (:func:`training_identity`), written with each checkpoint


def training_identity(folder: str | Path, plan: FitPlan) -> str:
    """sha256 of what a checkpoint may be resumed for: the training data (``X.npy``, ``y.npy``) and every setting
    of ``plan`` but its epoch count and checkpoint file (the network, batch, learning rate, clip and seed). A
    checkpoint of other subjects, sessions or seed would otherwise carry their weights into a model whose
    provenance names neither (and a member's withdrawal would not find it)."""
    h = hashlib.sha256()
    for name in ("X.npy", "y.npy"):
        with open(Path(folder) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    settings = {k: v for k, v in asdict(plan).items() if k not in ("epochs", "checkpoint", "identity")}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass
class FitOutcome:
    """Rank 0's result: the trained weights (as numpy arrays, in ``state_dict`` order), the mean training loss of
    each epoch over every rank, how many ranks trained, and the epoch a checkpoint resumed from (0: none)."""

    state: dict[str, np.ndarray]
    losses: list[float] = field(default_factory=list)
    world_size: int = 1
    resumed_from: int = 0

    def load_into(self, model):
        """Copy the weights into a network built from the same config; return it (in eval mode)."""
        import torch

        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state.items()})
        return model.eval()


def write_training_data(folder: str | Path, X: np.ndarray, y: np.ndarray) -> Path:
    """Write the epochs (``X``: n_epochs x ...; ``y``: class indices) as ``X.npy``/``y.npy`` in ``folder``, the form
    every rank maps read-only; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    X, y = np.ascontiguousarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X and y must hold the same number (> 0) of epochs, not {len(X)} and {len(y)}")
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return folder


def fit_data_parallel(data: str | Path | tuple[np.ndarray, np.ndarray], plan: FitPlan,
                      launch: Launch = Launch()) -> Optional[FitOutcome]:
    """Train ``plan``'s network on ``data`` with ``launch.world_size`` ranks; rank 0's :class:`FitOutcome`.

    ``data`` is a folder written by :func:`write_training_data` (every node must see it) or ``(X, y)`` arrays,
    written to a temporary folder first. One process on one machine trains in this process, with no process
    group; otherwise torch's elastic launcher starts ``launch.nproc`` ranks here (``spawn``). On a machine that
    holds no rank 0 (``--nnodes`` > 1), the result is None: rank 0's node stores the model.
    """
    launch.check()
    if plan.batch_size % launch.world_size:
        raise ValueError(f"the batch ({plan.batch_size}) must split evenly over the {launch.world_size} ranks")
    if isinstance(data, tuple):
        with tempfile.TemporaryDirectory(prefix="eegloop-ddp-") as tmp:
            return fit_data_parallel(write_training_data(tmp, *data), plan, launch)
    folder = str(Path(data).resolve())
    if plan.checkpoint:  # its network, data and settings must be this training's (before any rank starts)
        plan = replace(plan, identity=training_identity(folder, plan))
        check_checkpoint(plan.checkpoint, plan)
    n = len(np.load(Path(folder) / "y.npy", mmap_mode="r"))
    if n < plan.batch_size:
        raise ValueError(f"{n} epochs are fewer than one batch ({plan.batch_size})")
    backend = _backend(launch.backend)
    if launch.world_size == 1:
        return _rank_main(folder, plan, backend)
    return _launch(folder, plan, launch, backend)


def _backend(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def _launch(folder: str, plan: FitPlan, launch: Launch, backend: str) -> Optional[FitOutcome]:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    one_machine = launch.nnodes == 1
    cfg = LaunchConfig(min_nodes=launch.nnodes, max_nodes=launch.nnodes, nproc_per_node=launch.nproc,
                       rdzv_backend="c10d", rdzv_endpoint=launch.rdzv_endpoint or "127.0.0.1:0",
                       run_id=launch.rdzv_id, max_restarts=launch.max_restarts, start_method="spawn",
                       local_addr=launch.local_addr or ("127.0.0.1" if one_machine else None),
                       monitor_interval=0.1, rdzv_configs={"join_timeout": launch.join_timeout_s,
                                                           "read_timeout": launch.join_timeout_s})
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // launch.nproc))}
    if one_machine:
        env["GLOO_SOCKET_IFNAME"] = "lo"  # the ranks talk over the loopback, never the machine's own address
    saved = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        os.environ.setdefault(k, v)  # the ranks inherit them; a lab's own setting wins
    logger.info(f"data-parallel training: {launch.world_size} ranks ({launch.nnodes} node(s) x {launch.nproc}), "
                f"{backend}, rendezvous {cfg.rdzv_endpoint}")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError, RendezvousTimeoutError

    # torch's launcher logs a failed rank's whole traceback at ERROR: kept for --verbose debug, the one line is ours
    quiet = {n: logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
             if n.startswith("torch.distributed.elastic")}
    levels = {n: lg.level for n, lg in quiet.items()}
    for lg in quiet.values():
        lg.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(cfg, _rank_main)(folder, plan, backend)
    except RendezvousTimeoutError:
        raise EegloopError(f"--rdzv-endpoint: no rendezvous at {cfg.rdzv_endpoint} within {launch.join_timeout_s} s"
                           f" ({launch.nnodes} machines wanted; each runs this same command, --rdzv-timeout waits "
                           "longer)") from None
    except RendezvousError as exc:  # e.g. the endpoint refused: one line, not torch's traceback
        raise EegloopError(f"--rdzv-endpoint: the rendezvous at {cfg.rdzv_endpoint} failed "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'})"
                           ) from None
    except ChildFailedError as exc:
        logger.debug("data-parallel training failed: %s", exc)
        first = next(iter(exc.failures.values()), None)
        msg = first.message if first is not None else None
        if isinstance(msg, dict):  # torch's error file: {"message": ..., "extraInfo": {...}}
            msg = msg.get("message")
        lines = [x for x in str(msg or "").strip().splitlines() if x.strip(" =-")]
        raise EegloopError(f"data-parallel training failed on rank {first.local_rank if first else '?'}: "
                           f"{lines[-1][:300] if lines else f'exit code {first.exitcode if first else -1}'}") from None
    finally:
        for n, lg in quiet.items():
            lg.setLevel(levels[n])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outcomes = [r for r in results.values() if r is not None]
    return outcomes[0] if outcomes else None


def _rank_main(folder: str, plan: FitPlan, backend: str) -> Optional[FitOutcome]:
    """One rank's training (module level: the launcher pickles it by name into each spawned rank)."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = "cpu"
    if world > 1:
        if backend == "nccl":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    try:
        return _train(folder, plan, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(folder: str, plan: FitPlan, rank: int, world: int, device: str) -> Optional[FitOutcome]:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from .methods import build_model

    X = np.load(Path(folder) / "X.npy", mmap_mode="r")
    y = np.load(Path(folder) / "y.npy", mmap_mode="r")
    torch.manual_seed(plan.seed)
    model = build_model(plan.model_config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=plan.lr)
    start, losses = _resume(plan.checkpoint, model, opt)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    shard, steps = plan.batch_size // world, len(y) // plan.batch_size
    for epoch in range(start, plan.epochs):
        net.train()
        torch.manual_seed(plan.seed + 1_000_003 * (epoch + 1) + rank)  # dropout: reproducible per rank and epoch
        perm = np.random.default_rng([plan.seed, epoch]).permutation(len(y))
        total = torch.zeros(1, dtype=torch.float64)
        for k in range(steps):
            idx = np.sort(perm[k * plan.batch_size + rank * shard: k * plan.batch_size + (rank + 1) * shard])
            xb = torch.from_numpy(np.ascontiguousarray(X[idx])).to(device)
            yb = torch.from_numpy(np.asarray(y[idx])).to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(xb), yb)
            loss.backward()
            if plan.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), plan.clip)
            opt.step()
            total += loss.detach().double().cpu()
        if world > 1:
            dist.all_reduce(total)
        losses.append(float(total.item()) / (steps * world))
        if rank == 0:
            logger.info(f"data-parallel epoch {epoch + 1}/{plan.epochs}: loss {losses[-1]:.4f}")
            _save(plan.checkpoint, model, opt, epoch + 1, losses, plan)
        if world > 1:
            dist.barrier()  # no rank starts an epoch its checkpoint has not recorded the previous one of
    if rank != 0:
        return None
    state = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return FitOutcome(state=state, losses=losses, world_size=world, resumed_from=start)


def _save(checkpoint: Optional[str], model, opt, epochs_done: int, losses: list[float], plan: FitPlan) -> None:
    if not checkpoint:
        return
    import torch

    from .._files import atomic_path

    # owner-only, as the models are (a checkpoint holds what the subjects' EEG taught the network), and renamed
    # into place whole: a rank killed mid-write leaves the previous epoch's checkpoint as it was
    with atomic_path(checkpoint) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epochs_done": epochs_done,
                    "losses": list(losses), "identity": plan.identity,
                    "kind": str(plan.model_config.get("kind", ""))}, tmp)


def _resume(checkpoint: Optional[str], model, opt) -> tuple[int, list[float]]:
    if not checkpoint or not Path(checkpoint).is_file():
        return 0, []
    import torch

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # tensors and numbers only
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    logger.info(f"data-parallel training resumes after epoch {saved['epochs_done']} ({checkpoint})")
    return int(saved["epochs_done"]), [float(v) for v in saved["losses"]]


def with_checkpoint(plan: FitPlan, path: str | Path) -> FitPlan:
    """``plan`` writing (and resuming from) the checkpoint ``path``."""
    return replace(plan, checkpoint=str(path))
