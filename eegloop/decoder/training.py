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
from .._machine import cpu_flags, cpu_model
from ..protocol import TrainingConfig

__all__ = ["distillation_loss", "fit", "TrainResult", "TrainSettings", "TrainingClock", "EarlyStopping", "calibrate",
           "pick_device", "predict_proba"]


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def use_bf16(precision: str, device: str) -> bool:
    """Whether bfloat16 autocast is possible (and, for ``auto``, worth measuring) here."""
    if precision != "auto":
        return precision == "bf16"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


_MEASURED: dict = {}


@dataclass(frozen=True)
class TrainSettings:
    """How the network trains on this machine: bf16 autocast or not, channels-last memory or not."""

    bf16: bool = False
    channels_last: bool = False

    @property
    def label(self) -> str:
        return ("bf16" if self.bf16 else "fp32") + (", channels-last" if self.channels_last else "")


def _cache_file() -> Optional[str]:
    """The per-machine cache of measured settings (``$EEGLOOP_CACHE_DIR`` or ``~/.cache/eegloop``, file
    ``train-settings.json``), or None when ``EEGLOOP_NO_CALIBRATION_CACHE`` is set."""
    if os.environ.get("EEGLOOP_NO_CALIBRATION_CACHE"):
        return None
    base = os.environ.get("EEGLOOP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "eegloop")
    return os.path.join(base, "train-settings.json")


def _machine() -> str:
    """What the measurement depends on besides the model: the CPU (or GPU), torch, the thread count."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return f"{cpu_model()}|{gpu}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def _cached(key: str) -> Optional[TrainSettings]:
    import json

    path = _cache_file()
    try:
        with open(path) as fh:
            got = json.load(fh).get(key)
        return TrainSettings(bool(got["bf16"]), bool(got["channels_last"])) if isinstance(got, dict) else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _remember(key: str, settings: TrainSettings, timings: dict) -> None:
    import json
    import tempfile

    path = _cache_file()
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open(path) as fh:
                table = json.load(fh)
            table = table if isinstance(table, dict) else {}
        except (OSError, ValueError):
            table = {}
        table[key] = {"bf16": settings.bf16, "channels_last": settings.channels_last,
                      "step_ms": {k: round(v * 1e3, 2) for k, v in timings.items()},
                      "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(table, fh, indent=1)
        os.replace(tmp, path)  # whole or not at all: a second process reads either table
    except OSError as exc:
        logger.debug("could not cache the training settings: %s", exc)


def calibrate(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, device: str,
              allow_bf16: bool = True) -> TrainSettings:
    """Time a few training steps of a copy of ``model`` in each setting and return the fastest.

    Settings: fp32 or bf16 autocast (where ``allow_bf16``), default or channels-last memory (4-D inputs).
    Whether they pay depends on the CPU's matrix units and on the layers: measured on a 2-core AMD EPYC
    with AVX-512 BF16 (no AMX), a 1-D CNN on 4 channels trained 11x SLOWER under bf16 autocast, while the
    paper's CNN at 128 channels is faster on a Xeon with AMX. So it is measured, never inferred from the
    CPU's name or flags: once per architecture, batch shape and machine (cached in
    ``~/.cache/eegloop/train-settings.json``, keyed by CPU/GPU model, torch version and thread count). bf16
    is only chosen at least 20 % faster (it changes the numbers), channels-last 5 % (it does not).
    """
    cfg = model.get_config() if hasattr(model, "get_config") else {}
    key = f"{type(model).__name__}|{sorted(cfg.items())!r}|{tuple(xb.shape)}|{device}|{allow_bf16}|{_machine()}"
    if key in _MEASURED:
        return _MEASURED[key]
    got = _cached(key)
    if got is not None:
        _MEASURED[key] = got
        logger.info("training settings for %s from this machine's cache: %s", type(model).__name__, got.label)
        return got
    variants = [TrainSettings(False, False)]
    if allow_bf16:
        variants.append(TrainSettings(True, False))
    if xb.dim() == 4:
        variants += [TrainSettings(v.bf16, True) for v in list(variants)]
    probes = {}
    for v in variants:
        m = copy.deepcopy(model).train()
        probes[v] = (m.to(memory_format=torch.channels_last) if v.channels_last else m,
                     xb.contiguous(memory_format=torch.channels_last) if v.channels_last else xb)

    def step(v: TrainSettings) -> float:
        m, x = probes[v]
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=v.bf16):
            out = m(x)
        F.cross_entropy(out.float(), yb).backward()
        m.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for v in variants:  # warm-up: first calls pick kernels
        step(v)
    runs = [[step(v) for v in variants] for _ in range(4)]  # interleaved: a busy neighbour slows all alike
    med = {v: float(np.median([r[i] for r in runs])) for i, v in enumerate(variants)}
    # bf16 changes the numbers: only worth it at least 20 % faster; channels-last does not: 5 % will do
    chosen = min(variants, key=lambda v: med[v] * (1.25 if v.bf16 else 1.0) * (1.05 if v.channels_last else 1.0))
    _MEASURED[key] = chosen
    timings = {v.label: t for v, t in med.items()}
    _remember(key, chosen, timings)
    logger.info("training settings for %s, step: %s -> %s", type(model).__name__,
                ", ".join(f"{k} {t * 1e3:.1f} ms" for k, t in timings.items()), chosen.label)
    return chosen


def choose_settings(precision: str, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor,
                    device: str) -> TrainSettings:
    """``training.precision`` ``bf16``/``fp32`` pins the precision (channels-last still measured); ``auto``
    measures bf16 too where the hardware has it."""
    bf16_possible = use_bf16(precision, device)
    if len(xb) < 2:
        return TrainSettings(bf16_possible and precision == "bf16", False)
    if precision == "auto":
        return calibrate(model, xb, yb, device, allow_bf16=bf16_possible)
    got = calibrate(model, xb, yb, device, allow_bf16=False)  # fp32 vs channels-last only
    return TrainSettings(precision == "bf16", got.channels_last)


def choose_bf16(precision: str, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, device: str) -> bool:
    """Train under bf16 autocast? ``bf16``/``fp32`` as set; ``auto``: where possible, and only if measured faster."""
    return choose_settings(precision, model, xb, yb, device).bf16


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
    channels_last: bool = False
    stopped: str = "max_epochs"  # or "early_stopping", "time_budget"
    decay_from_epoch: Optional[int] = None  # schedule budget: the epoch after which the lr decayed to zero

    @property
    def schedule(self) -> str:
        """How the learning rate ran, in words (for metrics and reports)."""
        if self.decay_from_epoch is None:
            return "constant"
        return f"budget-aware: linear decay to zero at the time budget after epoch {self.decay_from_epoch}"


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


class TrainingClock:
    """A training loop's time budget: whether one more step still fits, the epochs planned, the lr decay.

    Shared by the student's :func:`fit` and the encoder's ``fit_encoder``. ``max_seconds`` counts from ``t0``
    (None or 0: no budget). A step is begun only if it and the last validation still fit (and ``after_passes``
    more passes of the validation's size: the caller's scoring after the fit), so a fit ends within its
    budget rather than a step and a validation past it.
    """

    def __init__(self, t0: float, max_seconds: Optional[float], n_epochs: int, after_passes: int = 0):
        self.t0, self.max_seconds, self.n_epochs = t0, (max_seconds or None), n_epochs
        self.after_passes = after_passes  # validation-sized passes the caller runs after the fit, inside the budget
        self.t_fit = time.perf_counter()  # the pace is measured on the epochs alone
        self.step_s = self.val_s = 0.0  # the last step's and the last validation's seconds
        self.decay: Optional[tuple] = None  # (start, end) times of the budget-aware decay
        self._t_step = 0.0

    def over(self) -> bool:
        """True when one more step and a validation would end past the budget."""
        return (self.max_seconds is not None
                and time.perf_counter() + self.step_s + self.val_s * (1 + self.after_passes) - self.t0
                >= self.max_seconds)

    def plan(self, ep: int) -> tuple[int, float, float]:
        """After epoch ``ep``: (epochs the budget holds at the pace so far, seconds per epoch, now)."""
        now = time.perf_counter()
        pace = (now - self.t_fit) / ep
        if self.max_seconds is None:
            return self.n_epochs, pace, now
        return min(self.n_epochs, ep + int(max(self.max_seconds - (now - self.t0), 0) // max(pace, 1e-9))), pace, now

    def start_decay_if_binding(self, ep: int, planned: int) -> bool:
        """Budget-aware schedule: when the plan cannot hold every epoch, decay to zero at the budget's end (just
        before the last validation). True the first time it starts."""
        if self.decay is not None or self.max_seconds is None or planned >= self.n_epochs:
            return False
        self.decay = (time.perf_counter(), self.t0 + self.max_seconds - self.val_s * (1 + self.after_passes))
        return True

    def begin_step(self, opt: torch.optim.Optimizer, decay_lr: float) -> None:
        """Before a training step: time it, and while decaying set ``opt``'s rate to ``decay_lr`` times the
        decay's factor now (1 at its start, 0 at the budget's end); a constant rate is left alone."""
        self._t_step = time.perf_counter()
        if self.decay is not None:
            start, end = self.decay
            for g in opt.param_groups:
                g["lr"] = decay_lr * max(0.0, (end - self._t_step) / max(end - start, 1e-9))

    def end_step(self) -> None:
        self.step_s = time.perf_counter() - self._t_step


def fit(model: nn.Module, X: np.ndarray, y: np.ndarray, cfg: TrainingConfig, X_val: np.ndarray, y_val: np.ndarray,
        teacher_logits: Optional[np.ndarray] = None, progress: bool | Callable[[dict], None] = False,
        device: str | None = None, seed: int | None = None, max_epochs: int | None = None,
        max_seconds: float | None = None, after_passes: int = 0) -> TrainResult:
    """Train ``model`` on (X, y), early-stopping on the validation loss (cross-entropy).

    Parameters
    ----------
    teacher_logits : array (n, n_classes) | None
        Teacher logits per training sample; None trains with alpha = 1.
    progress : bool | callable
        True shows a progress bar; a callable receives each epoch's record.
    max_seconds : float | None
        Stop at the first batch past this many seconds (after at least one batch), validate, keep the
        best state so far; ``stopped`` then says ``time_budget``. None: no limit. With ``cfg.schedule``
        ``budget`` and a budget that cannot hold ``max_epochs`` at the pace of the first epoch, the rest
        runs at ``cfg.budget_lr`` decaying linearly to zero at the budget's end (``decay_from_epoch``).
    after_passes : int
        Passes over the validation set the caller makes after the fit (bias calibration, scoring): their time
        (measured as the validation's) is kept free inside ``max_seconds``.

    Notes
    -----
    Why the budget-aware schedule: the paper's constant 3e-4 needs ~25-40 epochs here; where a 60 s budget holds
    11-16 of them (2 cores of an AMD EPYC with AVX2 only: a step of the 128-channel student is ~16 GFLOP, near
    the cores' peak already, so no kernel or precision choice makes it 2x cheaper), the cut weights are a net
    mid-descent (0.78 held-out top-1 at 11 epochs vs 0.84 at early stopping). A linear decay to zero at the
    budget (Li, Yumer & Ramanan 2020, "Budgeted training") reached 0.91-0.93 in the same 54 s (BENCHMARKS.md).
    Where the budget holds every epoch (a GPU, an AMX CPU, small data) nothing changes.
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
    d = _Tensors(torch.as_tensor(X, device=device), torch.as_tensor(y, device=device, dtype=torch.long),
                 torch.as_tensor(teacher_logits, device=device) if teacher_logits is not None else None,
                 torch.as_tensor(X_val, device=device), torch.as_tensor(y_val, device=device, dtype=torch.long))
    best_state = copy.deepcopy(model.state_dict())
    res = TrainResult(model=model, device=device, threads=threads, alpha=alpha)
    model, settings = _apply_settings(cfg, model, d, device, res)
    n_epochs = max_epochs or cfg.max_epochs
    bar = _progress_bar(progress, n_epochs)
    clock = TrainingClock(t0, max_seconds, n_epochs, after_passes)
    stopper = EarlyStopping()
    for ep in range(1, n_epochs + 1):
        tot, correct, n, cut = _train_epoch(model, opt, d, cfg, alpha, settings.bf16, device, rng, clock)
        vl, vc = _validate(model, d, settings.bf16, device, clock)
        # the plan: as many epochs as the budget holds at that pace (early stopping may end sooner)
        planned, pace, now = clock.plan(ep)
        rec = dict(epoch=ep, train_loss=tot / max(n, 1), train_acc=correct / max(n, 1), val_loss=vl / max(len(d.Xv), 1),
                   val_acc=vc / max(len(d.Xv), 1), planned=planned, seconds=round(now - t0, 3),
                   eta_s=round((planned - ep) * pace, 1))
        if cfg.schedule == "budget" and clock.start_decay_if_binding(ep, planned):
            res.decay_from_epoch = ep
            logger.info("budget-aware schedule: lr decays to zero over the %d epochs the budget holds", planned)
        rec["lr"] = opt.param_groups[0]["lr"]
        res.history.append(rec)
        _report(bar, progress, rec)
        if stopper.improved(rec["val_loss"]):
            res.best_epoch = ep
            best_state = copy.deepcopy(model.state_dict())
        elif stopper.bad >= cfg.patience:
            logger.info("early stop at epoch %d (best %d)", ep, res.best_epoch)
            res.stopped = "early_stopping"
            break
        if cut or (ep < n_epochs and clock.over()):
            logger.info("time budget %.1f s reached at epoch %d (best %d)", max_seconds, ep, res.best_epoch)
            res.stopped = "time_budget"
            break
    if bar is not None:
        bar.close()
    return _finish(model, best_state, settings, res, t0)


def _finish(model: nn.Module, best_state: dict, settings: TrainSettings, res: TrainResult, t0: float) -> TrainResult:
    """The best epoch's weights back, in the default memory layout, in eval mode; the result's counts."""
    model.load_state_dict(best_state)
    if settings.channels_last:  # saved and used online in the default layout
        model = model.to(memory_format=torch.contiguous_format)
    model.eval()
    res.epochs_run = len(res.history)
    res.seconds = time.perf_counter() - t0
    return res


@dataclass
class _Tensors:
    """A fit's data on its device: training inputs, labels, soft targets (or None), validation inputs and labels."""

    X: torch.Tensor
    y: torch.Tensor
    T: Optional[torch.Tensor]
    Xv: torch.Tensor
    yv: torch.Tensor


def _apply_settings(cfg: TrainingConfig, model: nn.Module, d: _Tensors, device: str, res: TrainResult):
    """Measure (or recall) this machine's fastest settings for the model, record them in ``res`` and apply
    channels-last memory where it won; returns (model, settings)."""
    n = min(cfg.batch_size, len(d.X))
    settings = choose_settings(cfg.precision, model, d.X[:n], d.y[:n], device)
    res.precision, res.channels_last = ("bf16" if settings.bf16 else "fp32"), settings.channels_last
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
        d.X = d.X.contiguous(memory_format=torch.channels_last)
    return model, settings


class EarlyStopping:
    """The best validation score so far (lower is better) and the epochs since it last improved."""

    def __init__(self):
        self.best, self.bad = float("inf"), 0

    def improved(self, score: float) -> bool:
        """True (and the count reset) when ``score`` beats the best by more than 1e-6, else one more bad epoch."""
        if score < self.best - 1e-6:
            self.best, self.bad = score, 0
            return True
        self.bad += 1
        return False


def _autocast(device: str, bf16: bool):
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)


def _progress_bar(progress, n_epochs: int):
    """A tqdm bar over the epochs when ``progress`` is True, else None."""
    if progress is not True:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_epochs, desc="training", unit="epoch", leave=False)


def _report(bar, progress, rec: dict) -> None:
    """One epoch's record to the bar, or to the ``progress`` callable."""
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val_loss=f"{rec['val_loss']:.3f}",
                        val_acc=f"{rec['val_acc']:.2f}")
    elif callable(progress):
        progress(rec)


def _train_epoch(model: nn.Module, opt, d: _Tensors, cfg: TrainingConfig, alpha: float, bf16: bool, device: str,
                 rng: np.random.Generator, clock: TrainingClock) -> tuple[float, int, int, bool]:
    """One pass over the training set in shuffled batches; returns (summed loss, correct, samples, cut short)."""
    model.train()
    tot, correct, n = 0.0, 0, 0
    for idx in _batches(len(d.X), cfg.batch_size, rng):
        if len(idx) < 2:  # BatchNorm needs two samples
            continue
        if n and clock.over():
            return tot, correct, n, True  # checked between batches: a big network's epoch can be longer than the cap
        clock.begin_step(opt, cfg.budget_lr)
        it = torch.as_tensor(idx, device=device)
        with _autocast(device, bf16):
            logits = model(d.X[it])
        logits = logits.float()
        loss = distillation_loss(logits, d.y[it], d.T[it] if d.T is not None else None, alpha, cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tot += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == d.y[it]).sum())
        n += len(idx)
        clock.end_step()
    return tot, correct, n, False


def _validate(model: nn.Module, d: _Tensors, bf16: bool, device: str, clock: TrainingClock) -> tuple[float, int]:
    """Summed cross-entropy and correct count on the validation set (timed for the clock)."""
    model.eval()
    t_val = time.perf_counter()
    with torch.no_grad():
        vl, vc = 0.0, 0
        for i in range(0, len(d.Xv), 512):
            with _autocast(device, bf16):
                lo = model(d.Xv[i:i + 512]).float()
            vl += float(F.cross_entropy(lo, d.yv[i:i + 512], reduction="sum"))
            vc += int((lo.argmax(1) == d.yv[i:i + 512]).sum())
    clock.val_s = time.perf_counter() - t_val
    return vl, vc
