"""EEG -> image embedding: a compact encoder trained contrastively against CLIP image embeddings.

In the spirit of ATM (Li et al. 2024): channel attention across electrodes, a temporal-spatial convolution,
and a projection head into the CLIP image-embedding space, trained with a symmetric InfoNCE loss against
the stimuli's CLIP embeddings (learned temperature; optional MSE term). Because its output lives in the
embedding space and not over a fixed set of classes, it can rank images of concepts it never saw in
training (zero-shot retrieval, :mod:`.zeroshot`) and drive the ``retrieve`` and ``embedding`` feedback modes.

The input is the ``series`` representation (band-passed, per-channel standardised, resampled to the lowest
rate that keeps the band: see :mod:`.preprocessing`), the same function offline and online.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._logging import logger
from ..errors import EegloopError
from ..protocol import EncoderConfig

__all__ = ["EEGEncoder", "fit_encoder", "EncoderFit", "contrastive_loss", "OnlineEncoder", "encode",
           "ENCODER_REPRESENTATION"]

ENCODER_REPRESENTATION = "series"


class _ChannelAttention(nn.Module):
    """Self-attention across electrodes: each channel's time course (plus a learned electrode embedding) is a
    token; the attention weights (B, C, C) re-mix the channels' signals — a learned, input-dependent
    re-referencing ``x + gain * A @ x``, the gain starting at zero. The spatial filters that follow are linear, so
    :class:`EEGEncoder` applies ``W (x + g A x)`` as ``(W + g W A) x``: the same function at half the
    multiplications (measured: the attention was half of a training step at 128 channels)."""

    def __init__(self, n_chans: int, n_times: int, dim: int):
        super().__init__()
        self.key = nn.Linear(n_times, dim)
        self.query = nn.Linear(n_times, dim)
        self.electrode = nn.Parameter(torch.zeros(n_chans, dim))
        self.gain = nn.Parameter(torch.zeros(1))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x):  # (B, C, T) -> the attention weights (B, C, C)
        k = self.key(x) + self.electrode
        q = self.query(x) + self.electrode
        return torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)


class EEGEncoder(nn.Module):
    """Channel attention -> spatial filters -> temporal convolution -> projection into the embedding space.

    Parameters
    ----------
    n_chans, n_times : int
        Input shape (channels x samples of the ``series`` representation).
    sfreq : float
        Sampling rate of that input, Hz (sets the temporal kernel to ~100 ms and the pooling to ~20 ms).
    n_outputs : int
        Embedding size (the CLIP model's: 512 for ViT-B/32).
    filters, attention_dim, hidden, dropout : see :class:`~eegloop.protocol.EncoderConfig`.
    """

    kind = "eeg_encoder"

    def __init__(self, n_chans: int, n_times: int, sfreq: float, n_outputs: int, filters: int = 40,
                 attention_dim: int = 32, hidden: int = 512, dropout: float = 0.3):
        super().__init__()
        self.n_chans, self.n_times, self.sfreq, self.n_outputs = n_chans, n_times, float(sfreq), n_outputs
        self.filters, self.attention_dim, self.hidden, self.dropout = filters, attention_dim, hidden, dropout
        self.attention = _ChannelAttention(n_chans, n_times, attention_dim) if attention_dim else None
        k = max(3, int(round(0.1 * sfreq)) | 1)  # ~100 ms, odd
        k = min(k, n_times | 1)
        pool = max(1, int(round(0.02 * sfreq)))
        while pool > 1 and n_times // pool < 4:
            pool -= 1
        self.spatial = nn.Parameter(torch.empty(filters, n_chans))  # spatial filters (virtual channels)
        nn.init.kaiming_uniform_(self.spatial, a=math.sqrt(5))
        self.spatial_norm = nn.BatchNorm1d(filters)
        self.temporal = nn.Sequential(nn.Conv1d(filters, filters, k, padding=k // 2, groups=filters, bias=False),
                                      nn.BatchNorm1d(filters), nn.ELU(), nn.AvgPool1d(pool, pool), nn.Dropout(dropout))
        n_flat = filters * (n_times // pool)
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, hidden), nn.GELU())
        self.residual = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, n_outputs))

    def forward(self, x):
        w = self.spatial
        if self.attention is not None:  # W (x + g A x) = (W + g W A) x
            w = w + self.attention.gain * (w @ self.attention(x))
        h = self.temporal(self.spatial_norm(w @ x))
        h = self.proj(h)
        return self.out(h + self.residual(h))

    def get_config(self) -> dict:
        return dict(kind=self.kind, n_chans=self.n_chans, n_times=self.n_times, sfreq=self.sfreq,
                    n_outputs=self.n_outputs, filters=self.filters, attention_dim=self.attention_dim,
                    hidden=self.hidden, dropout=self.dropout)

    @classmethod
    def from_config(cls, cfg: dict) -> "EEGEncoder":
        cfg = dict(cfg)
        if cfg.pop("kind", cls.kind) != cls.kind:
            raise EegloopError("not an EEG encoder's configuration")
        return cls(**cfg)


def contrastive_loss(pred: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor,
                     mse_weight: float = 0.0) -> torch.Tensor:
    """Symmetric InfoNCE between predicted and target embeddings (CLIP's loss), plus ``mse_weight`` x MSE.

    Rows of the same image in one batch are all positives of each other (a repeated image is not its own
    negative).
    """
    p = F.normalize(pred, dim=-1)
    t = F.normalize(target, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * p @ t.T
    same = (t @ t.T) > 1 - 1e-6  # identical targets: the same image shown twice
    pos = same.float() / same.float().sum(1, keepdim=True)
    loss = 0.5 * (-(pos * F.log_softmax(logits, 1)).sum(1).mean() - (pos * F.log_softmax(logits.T, 1)).sum(1).mean())
    if mse_weight:
        loss = loss + mse_weight * F.mse_loss(p, t)
    return loss


@dataclass
class EncoderFit:
    """A trained encoder and how its training went."""

    model: EEGEncoder
    logit_scale: float
    history: list = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    stopped: str = "max_epochs"  # or early_stopping, time_budget
    threads: int = 1
    decay_from_epoch: Optional[int] = None  # schedule budget: the epoch after which the lr decayed to zero


def fit_encoder(X: np.ndarray, Z: np.ndarray, cfg: EncoderConfig, sfreq: float, X_val: np.ndarray | None = None,
                Z_val: np.ndarray | None = None, seed: int = 0, max_seconds: float | None = None,
                progress: Optional[Callable[[dict], None]] = None, device: str = "cpu",
                after_passes: int = 0) -> EncoderFit:
    """Train an :class:`EEGEncoder` on inputs ``X`` (n, channels, times) with target embeddings ``Z`` (n, d).

    Early stopping on the validation loss when (``X_val``, ``Z_val``) are given (whole blocks held out by
    the caller), else on the training loss. ``max_seconds`` (default ``cfg.budget_s``; 0 or None: none) stops
    between batches, keeping the best weights so far (``stopped: time_budget``); with ``cfg.schedule``
    ``budget``, a budget that cannot hold ``max_epochs`` at the first epoch's pace makes the learning rate
    decay linearly from ``cfg.lr`` to zero at its end (as the student's :func:`~.training.fit`);
    ``after_passes`` validation-sized passes the caller makes afterwards are kept inside the budget.
    """
    from .training import EarlyStopping, TrainingClock, set_threads

    t0 = time.perf_counter()
    if max_seconds is None and cfg.budget_s:
        max_seconds = cfg.budget_s
    threads = set_threads()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X = np.ascontiguousarray(X, dtype=np.float32)
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    if len(X) < 2:
        raise EegloopError(f"the encoder needs at least 2 training epochs, got {len(X)}")
    model = EEGEncoder(X.shape[1], X.shape[2], sfreq, Z.shape[1], cfg.filters, cfg.attention_dim, cfg.hidden,
                       cfg.dropout).to(device)
    logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature), device=device))
    opt = torch.optim.AdamW([*model.parameters(), logit_scale], lr=cfg.lr, weight_decay=cfg.weight_decay)
    Xt, Zt = torch.as_tensor(X, device=device), torch.as_tensor(Z, device=device)
    val = None
    if X_val is not None and len(X_val) >= 2:
        val = (torch.as_tensor(np.ascontiguousarray(X_val, dtype=np.float32), device=device),
               torch.as_tensor(np.ascontiguousarray(Z_val, dtype=np.float32), device=device),
               torch.as_tensor(np.sort(rng.permutation(len(X_val))[:1000]), device=device))
    res = EncoderFit(model, float(logit_scale.detach().exp()), threads=threads)
    stopper, best_state = EarlyStopping(), copy.deepcopy(model.state_dict())
    best_scale = float(logit_scale.detach())
    bs = min(cfg.batch_size, len(X))
    clock = TrainingClock(t0, max_seconds, cfg.max_epochs, after_passes)
    for ep in range(1, cfg.max_epochs + 1):
        tot, n, cut = _encoder_epoch(model, opt, Xt, Zt, logit_scale, cfg, bs, rng, clock, device)
        model.eval()
        t_val = time.perf_counter()
        rec = {"epoch": ep, "train_loss": tot / max(n, 1)}
        if val is not None:
            rec.update(_encoder_validation(model, *val, logit_scale, bs))
        clock.val_s = time.perf_counter() - t_val
        planned, pace, now = clock.plan(ep)
        if cfg.schedule == "budget" and clock.start_decay_if_binding(ep, planned):
            res.decay_from_epoch = ep
        rec.update(planned=planned, seconds=round(now - t0, 3), eta_s=round((planned - ep) * pace, 1),
                   temperature=round(float(1.0 / logit_scale.detach().exp()), 4), lr=opt.param_groups[0]["lr"])
        res.history.append(rec)
        if progress is not None:
            progress(rec)
        if stopper.improved(rec.get("val_loss", rec["train_loss"])):
            res.best_epoch = ep
            best_state, best_scale = copy.deepcopy(model.state_dict()), float(logit_scale.detach())
        elif stopper.bad >= cfg.patience:
            res.stopped = "early_stopping"
            break
        if cut or (ep < cfg.max_epochs and clock.over()):
            res.stopped = "time_budget"
            logger.info("encoder: time budget %.1f s reached at epoch %d (best %d)", max_seconds, ep, res.best_epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    res.model, res.logit_scale = model, min(math.exp(best_scale), 100.0)  # the loss clamps it there too
    res.epochs_run = len(res.history)
    res.seconds = time.perf_counter() - t0
    return res


def _encoder_epoch(model: EEGEncoder, opt, Xt: torch.Tensor, Zt: torch.Tensor, logit_scale: nn.Parameter,
                   cfg: EncoderConfig, bs: int, rng: np.random.Generator, clock,
                   device: str) -> tuple[float, int, bool]:
    """One pass over the training set in shuffled batches; returns (summed loss, samples, cut short by the clock)."""
    model.train()
    order = rng.permutation(len(Xt))
    tot, n = 0.0, 0
    for i in range(0, len(Xt), bs):
        idx = order[i:i + bs]
        if len(idx) < 2:
            continue
        if n and clock.over():
            return tot, n, True
        clock.begin_step(opt, cfg.lr)
        it = torch.as_tensor(idx, device=device)
        loss = contrastive_loss(model(Xt[it]), Zt[it], logit_scale, cfg.mse_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tot += float(loss.detach()) * len(idx)
        n += len(idx)
        clock.end_step()
    return tot, n, False


@torch.no_grad()
def _encoder_validation(model: EEGEncoder, Xv: torch.Tensor, Zv: torch.Tensor, pick: torch.Tensor,
                        logit_scale: nn.Parameter, bs: int) -> dict:
    """The held-out loss and identification top-1 among (at most 1000 of) the held-out epochs."""
    pv = torch.cat([model(Xv[i:i + 512]) for i in range(0, len(Xv), 512)])
    # the loss in fixed chunks of the training batch's size (a batch's loss compares within it; one
    # matrix over all held-out epochs would be n^2: 1 GB at THINGS-EEG2's 16 000)
    parts = [(float(contrastive_loss(pv[i:i + bs], Zv[i:i + bs], logit_scale.detach())), len(pv[i:i + bs]))
             for i in range(0, len(pv), bs) if len(pv[i:i + bs]) >= 2]
    val_loss = sum(v * n for v, n in parts) / max(sum(n for _, n in parts), 1)
    # identification: the true image (or an identical one) beats every other candidate
    zv = F.normalize(Zv[pick], dim=-1)
    same = (zv @ zv.T) > 1 - 1e-6
    top = (F.normalize(pv[pick], dim=-1) @ zv.T).argmax(1)
    return {"val_loss": val_loss, "val_top1": float(same[torch.arange(len(top)), top].float().mean())}


@torch.no_grad()
def encode(model: EEGEncoder, X: np.ndarray, batch: int = 512) -> np.ndarray:
    """Unit-length embeddings of ``X`` (n, channels, times)."""
    model.eval()
    out = [F.normalize(model(torch.as_tensor(np.ascontiguousarray(X[i:i + batch], dtype=np.float32))), dim=-1)
           for i in range(0, len(X), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.n_outputs), np.float32)


class OnlineEncoder:
    """One epoch -> a unit-length CLIP-space embedding, with the preprocessing the encoder was trained with.

    ``meta`` holds the CLIP model whose space it predicts (``clip_model``, ``clip_pretrained``) and the
    ``center`` (mean embedding of the training images) that retrieval subtracts from candidates.
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        from safetensors.torch import load_file

        from .modelio import read_model_meta
        from .preprocessing import Preprocessor

        path = Path(path)
        self.meta = read_model_meta(path, "encoder")
        if (self.meta.get("model") or {}).get("kind") != EEGEncoder.kind:
            raise EegloopError(f"{path} is not an EEG encoder (kind {self.meta.get('model', {}).get('kind')!r})")
        self.pre = Preprocessor.from_dict(self.meta["preprocessing"])
        self.channel_names = list(self.meta["channel_names"])
        self.clip_model = self.meta.get("clip_model")
        self.clip_pretrained = self.meta.get("clip_pretrained")
        self.center = np.asarray(self.meta.get("center") or np.zeros(self.meta["model"]["n_outputs"]), np.float32)
        self.model = EEGEncoder.from_config(self.meta["model"])
        self.model.load_state_dict(load_file(str(path)))
        self.model.eval().to(device)
        self.device = device
        torch.set_num_threads(1)

    @property
    def dim(self) -> int:
        return int(self.model.n_outputs)

    def encode(self, epoch) -> np.ndarray:
        """The embedding (unit length, float32) of one epoch (channels x times, the training layout)."""
        from .modelio import check_epoch_length

        data = getattr(epoch, "data", epoch)
        check_epoch_length(self.meta, data)
        x = self.pre(np.asarray(data, dtype=np.float32)[None])
        with torch.no_grad():
            z = self.model(torch.as_tensor(x, device=self.device))
        return F.normalize(z, dim=-1)[0].cpu().numpy().astype(np.float32)

    def rank(self, z: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Cosine similarity of ``z`` with each candidate embedding (centred like the training targets)."""
        return similarity(z[None], candidates, self.center)[0]


def similarity(pred: np.ndarray, candidates: np.ndarray, center: Optional[np.ndarray] = None) -> np.ndarray:
    """Cosine similarity (n_pred, n_candidates) of predictions with candidate image embeddings, the candidates
    centred on ``center`` (the training images' mean embedding) first, as the targets were in training."""
    c = np.asarray(candidates, np.float64)
    if center is not None:
        c = c - np.asarray(center, np.float64)[None]
    c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    p = np.asarray(pred, np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    return p @ c.T


def center_targets(Z: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Targets for training: embeddings minus the training images' mean, back to unit length."""
    c = np.asarray(Z, np.float64) - np.asarray(center, np.float64)[None]
    return (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def image_mean(Z_by_image: dict, shas: Sequence[str]) -> np.ndarray:
    """Mean embedding over distinct images (each image once, however often it was shown)."""
    uniq = sorted(set(shas))
    return np.mean(np.stack([Z_by_image[s] for s in uniq]), 0).astype(np.float32)
