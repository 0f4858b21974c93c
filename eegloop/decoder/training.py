"""Training the student: alpha*CE + (1-alpha)*KD, Adam, clipping, early stopping.

Settings come from the protocol's ``training`` section (paper §3.5-3.6: alpha
0.5, T 1, Adam 3e-4, batch 64, gradient clip 1.0, patience 10 on validation
loss, at most 50 epochs). With no teacher, alpha is 1 (plain cross-entropy).
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._logging import logger
from ..protocol import TrainingConfig

__all__ = ["distillation_loss", "fit", "TrainResult", "pick_device", "predict_proba"]


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def use_bf16(precision: str, device: str) -> bool:
    """Whether bfloat16 autocast is possible (and, for ``auto``, worth measuring) here."""
    if precision != "auto":
        return precision == "bf16"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


_MEASURED: dict = {}


def faster_in_bf16(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, device: str) -> bool:
    """Time a few training steps of a copy of ``model`` in fp32 and under bf16 autocast; True if bf16 wins.

    Whether bf16 pays depends on the CPU's matrix units and on the layers: measured on a 2-core AMD EPYC
    with AVX-512 BF16 (no AMX), a 1-D CNN on 4 channels trained 11x SLOWER under bf16 autocast, while the
    paper's CNN at 128 channels is faster on a Xeon with AMX. So it is measured, once per architecture
    and batch shape in this process, never inferred from the CPU's name or flags.
    """
    cfg = model.get_config() if hasattr(model, "get_config") else {}
    key = (type(model).__name__, repr(sorted(cfg.items())), tuple(xb.shape), device)
    if key in _MEASURED:
        return _MEASURED[key]
    probe = copy.deepcopy(model).train()

    def step(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = probe(xb)
        F.cross_entropy(out.float(), yb).backward()
        probe.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step(False), step(True)  # warm-up: first calls pick kernels
    pairs = [(step(False), step(True)) for _ in range(4)]  # interleaved: a busy neighbour slows both alike
    t32 = float(np.median([a for a, _ in pairs]))
    t16 = float(np.median([b for _, b in pairs]))
    _MEASURED[key] = t16 < 0.8 * t32
    logger.info("precision: %s step %.1f ms fp32, %.1f ms bf16 -> %s", type(model).__name__, t32 * 1e3, t16 * 1e3,
                "bf16" if _MEASURED[key] else "fp32")
    return _MEASURED[key]


def choose_bf16(precision: str, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, device: str) -> bool:
    """Train under bf16 autocast? ``bf16``/``fp32`` as set; ``auto``: where possible, and only if measured faster."""
    bf16 = use_bf16(precision, device)
    if bf16 and precision == "auto" and len(xb) >= 2:
        bf16 = faster_in_bf16(model, xb, yb, device)
    return bf16


def set_threads() -> int:
    """Use every core for intra-op work (2 here), or EEGLOOP_THREADS (set in parallel fold workers, so that
    two workers do not fight over the same cores); returns the count."""
    n = max(1, int(os.environ.get("EEGLOOP_THREADS", 0) or 0) or os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def distillation_loss(logits: torch.Tensor, y: torch.Tensor, teacher_logits: Optional[torch.Tensor],
                      alpha: float, T: float) -> torch.Tensor:
    """alpha * CE(student, y) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    ce = F.cross_entropy(logits, y)
    if teacher_logits is None or alpha >= 1.0:
        return ce
    kd = F.kl_div(F.log_softmax(logits / T, dim=1), F.softmax(teacher_logits / T, dim=1),
                  reduction="batchmean") * (T * T)
    return alpha * ce + (1.0 - alpha) * kd


@dataclass
class TrainResult:
    model: nn.Module
    history: list = field(default_factory=list)  # per epoch: train_loss, val_loss, train_acc, val_acc
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1
    alpha: float = 1.0
    precision: str = "fp32"
    stopped: str = "max_epochs"  # or "early_stopping", "time_budget"


def _batches(n: int, bs: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, bs):
        yield order[i:i + bs]


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, device: str = "cpu", batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(X), batch):
        xb = torch.as_tensor(X[i:i + batch], device=device)
        out.append(torch.softmax(model(xb), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fit(model: nn.Module, X: np.ndarray, y: np.ndarray, cfg: TrainingConfig, X_val: np.ndarray, y_val: np.ndarray,
        teacher_logits: Optional[np.ndarray] = None, progress: bool | Callable[[dict], None] = False,
        device: str | None = None, seed: int | None = None, max_epochs: int | None = None,
        max_seconds: float | None = None) -> TrainResult:
    """Train ``model`` on (X, y), early-stopping on the validation loss (cross-entropy).

    Parameters
    ----------
    teacher_logits : array (n, n_classes) | None
        Teacher logits per training sample; None trains with alpha = 1.
    progress : bool | callable
        True shows a progress bar; a callable receives each epoch's record.
    max_seconds : float | None
        Stop at the first batch past this many seconds (after at least one batch), validate, keep the
        best state so far; ``stopped`` then says ``time_budget``. None: no limit.
    """
    t0 = time.perf_counter()  # the budget counts the precision calibration too
    device = device or pick_device()
    threads = set_threads()
    seed = cfg.seed if seed is None else seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = model.to(device)
    alpha = cfg.alpha if teacher_logits is not None else 1.0
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    Xt = torch.as_tensor(X, device=device)
    yt = torch.as_tensor(y, device=device, dtype=torch.long)
    Tt = torch.as_tensor(teacher_logits, device=device) if teacher_logits is not None else None
    Xv = torch.as_tensor(X_val, device=device)
    yv = torch.as_tensor(y_val, device=device, dtype=torch.long)
    best, best_state, bad = float("inf"), copy.deepcopy(model.state_dict()), 0
    res = TrainResult(model=model, device=device, threads=threads, alpha=alpha)
    n = min(cfg.batch_size, len(X))
    bf16 = choose_bf16(cfg.precision, model, Xt[:n], yt[:n], device)
    res.precision = "bf16" if bf16 else "fp32"

    def autocast():
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)

    n_epochs = max_epochs or cfg.max_epochs
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="training", unit="epoch", leave=False)
    t_fit = time.perf_counter()  # the pace is measured on the epochs alone
    for ep in range(1, n_epochs + 1):
        model.train()
        tot, correct, n = 0.0, 0, 0
        cut = False
        for idx in _batches(len(X), cfg.batch_size, rng):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            if max_seconds is not None and n and time.perf_counter() - t0 >= max_seconds:
                cut = True  # checked between batches: a big network's epoch can be longer than the whole cap
                break
            it = torch.as_tensor(idx, device=device)
            with autocast():
                logits = model(Xt[it])
            logits = logits.float()
            loss = distillation_loss(logits, yt[it], Tt[it] if Tt is not None else None, alpha, cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            tot += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yt[it]).sum())
            n += len(idx)
        model.eval()
        with torch.no_grad():
            vl, vc = 0.0, 0
            for i in range(0, len(Xv), 512):
                with autocast():
                    lo = model(Xv[i:i + 512]).float()
                vl += float(F.cross_entropy(lo, yv[i:i + 512], reduction="sum"))
                vc += int((lo.argmax(1) == yv[i:i + 512]).sum())
        now = time.perf_counter()
        pace = (now - t_fit) / ep  # seconds per epoch so far
        # the plan: as many epochs as the budget holds at that pace (early stopping may end sooner)
        planned = n_epochs if max_seconds is None else min(n_epochs, ep + int(max(max_seconds - (now - t0), 0)
                                                                                // max(pace, 1e-9)))
        rec = dict(epoch=ep, train_loss=tot / max(n, 1), train_acc=correct / max(n, 1),
                   val_loss=vl / max(len(Xv), 1), val_acc=vc / max(len(Xv), 1), planned=planned,
                   seconds=round(now - t0, 3), eta_s=round((planned - ep) * pace, 1))
        res.history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val_loss=f"{rec['val_loss']:.3f}",
                            val_acc=f"{rec['val_acc']:.2f}")
        elif callable(progress):
            progress(rec)
        if rec["val_loss"] < best - 1e-6:
            best, bad, res.best_epoch = rec["val_loss"], 0, ep
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                logger.info("early stop at epoch %d (best %d)", ep, res.best_epoch)
                res.stopped = "early_stopping"
                break
        if cut or (max_seconds is not None and ep < n_epochs and time.perf_counter() - t0 >= max_seconds):
            logger.info("time budget %.1f s reached at epoch %d (best %d)", max_seconds, ep, res.best_epoch)
            res.stopped = "time_budget"
            break
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    res.epochs_run = len(res.history)
    res.seconds = time.perf_counter() - t0
    return res
