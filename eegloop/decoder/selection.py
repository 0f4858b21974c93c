"""Automatic model selection (``decoder.model: auto``): the best candidate on honest inner folds.

The candidates (``decoder.candidates``, in order of preference) are cross-validated on
the training epochs only, with folds that leave whole blocks (or runs) out —
the same honesty rule as :func:`~.evaluation.evaluate`. The key metric is AUC
for two classes and balanced accuracy otherwise; the winner is the first candidate (in that order) within one
standard error of the best, the standard error of the paired fold-by-fold differences from
the best (the one-standard-error rule, made paired: see :func:`_choose`). A network candidate is first
timed on a few batches; one whose folds would not end inside
``decoder.select_budget_s`` is skipped and listed as skipped, never silently
dropped. Where no honest fold exists (a blocked design, one class per block)
nothing can be compared honestly: the protocol's own student is kept and the
reason is stored.

Why ``vote`` comes first by default. On the five real subjects of ``../shared/data`` (P300 s1-s3, N170 s2 and
s11; run-wise outer folds, the whole selection inside each, the three pipelines only) no one linear pipeline
won everywhere, and three inner folds could not tell which would: picking the cheapest within one SE scored 0.628
mean AUC, the best inner mean 0.625, while the average of the three pipelines' probabilities scored 0.638 — above
the best single pipeline on average (LDA 0.635) and above the xDAWN + tangent-space pipeline on four of the five
(0.624 mean); its worst loss to the best pipeline of a subject: N170 s11, .661 against LDA's .680. (Through
``evaluate``, networks included within the budget: the default before 0.635, now 0.636 — README.)
An average of models fitted on the same epochs varies less than any of them, which is what the one-SE rule's
preference for the simpler model is after; a network or a pipeline that beats it by more than one SE still
wins (the simulator's 40 classes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..protocol import Protocol
from ..types import EpochSet
from .fitting import Fitted, fit_method
from .folds import NoHonestFoldError, inner_validation, make_folds
from .methods import build_network, feature_key, is_network, student
from .scoring import key_metric, scores

__all__ = ["Selection", "select_model"]


@dataclass
class Selection:
    """The outcome of a comparison: the winner, every candidate's score or why it was skipped."""

    winner: str
    metric: str
    split: str
    n_folds: int
    candidates: dict = field(default_factory=dict)  # name -> {"score", "folds", "seconds"} or {"skipped": why}
    # (with "budget": True where the time budget skipped it)
    note: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"winner": self.winner, "metric": self.metric, "split": self.split, "n_folds": self.n_folds,
                "candidates": self.candidates, "note": self.note, "seconds": round(self.seconds, 2)}

    @classmethod
    def from_json(cls, d: dict) -> "Selection":
        """The inverse of :meth:`to_json` (a model's stored ``metrics["selection"]``)."""
        return cls(d.get("winner", ""), d.get("metric", ""), d.get("split", ""), int(d.get("n_folds") or 0),
                   dict(d.get("candidates") or {}), d.get("note") or "", float(d.get("seconds") or 0.0))

    def budget_skipped(self) -> tuple:
        """The candidates the time budget (``decoder.select_budget_s``, wall-clock) left out."""
        return tuple(n for n, c in self.candidates.items() if c.get("budget"))

    def describe(self) -> str:
        rows = []
        for name, c in self.candidates.items():
            if "skipped" in c:
                rows.append(f"  {name:<16} skipped: {c['skipped']}")
            else:
                mark = "  <- chosen" if name == self.winner else ""
                rows.append(f"  {name:<16} {self.metric} {c['score']:.3f} (folds "
                            f"{', '.join(f'{v:.2f}' for v in c['folds'])}; {c['seconds']:.1f} s){mark}")
        head = (f"model selection on {self.n_folds} inner {self.split}-wise folds ({self.seconds:.1f} s): "
                f"{self.winner}" if self.n_folds else f"model selection: {self.winner}")
        return "\n".join([head + (f" — {self.note}" if self.note else "")] + rows)

    def fit_winner(self, es: EpochSet, feats: dict, train_idx, protocol: Protocol, teacher_logits=None,
                   seed: int = 0, progress=False) -> Fitted:
        """Fit the winner on every training epoch (networks early-stop on an every-class inner split)."""
        tr, va = inner_validation(es, np.asarray(train_idx), protocol.training.split, seed)
        return fit_method(self.winner, es, feats, tr, va, protocol, teacher_logits, progress, seed)


def _seconds_per_fit(method: str, X: np.ndarray, n_fit: int, n_classes: int, protocol: Protocol) -> float:
    """Time a few training batches of a network and scale to a whole fit (an upper bound: every epoch)."""
    import torch

    from .training import choose_bf16, set_threads

    set_threads()
    bs = min(protocol.training.batch_size, max(2, len(X)))
    model = build_network(method, X[:bs], n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=protocol.training.lr)
    xb = torch.as_tensor(X[:bs])
    yb = torch.as_tensor(np.arange(bs) % n_classes)
    bf16 = choose_bf16(protocol.training.precision, model, xb, yb, "cpu")  # the choice fit() will make
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    per_batch = float(np.median(times[1:]))
    return per_batch * (n_fit / bs) * 1.15 * protocol.training.max_epochs  # + validation passes


def _choose(order: list, folds: dict) -> tuple[str, str]:
    """The winner among ``folds`` (name -> inner-fold scores, the same folds for all), and why, if not the best.

    The one-standard-error rule (Breiman et al. 1984; Hastie et al., ESL 7.10) keeps the preferred candidate
    (first in ``order``: the ensemble, then the cheapest) whose mean is within one standard error of the best's,
    a tie broken by noise towards a costlier or less stable model being a loss on new blocks. The standard error is that of the *paired* fold-by-fold
    differences from the best: every candidate is scored on the same folds, and the folds differ more in how
    hard they are (which blocks, how many artifacts) than the candidates differ on any one of them. The unpaired
    spread of the best's fold scores, used before, counts that shared difficulty as noise in the comparison, so a
    costlier candidate ahead on every fold by a steady margin still lost to a cheaper one; the paired difference
    resolves a steady margin and still keeps the cheaper model where the margin changes sign from fold to fold.
    No extra fit: the same inner folds, so quick-train's time is unchanged.
    """
    means = {n: float(np.nanmean(v)) for n, v in folds.items()}
    best = max(means, key=means.get)
    ref = np.asarray(folds[best], float)

    def se_of_difference(name: str) -> float:
        d = ref - np.asarray(folds[name], float)
        d = d[np.isfinite(d)]
        return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0

    for name in (n for n in order if n in folds):
        se = se_of_difference(name)
        if means[name] >= means[best] - se:
            if name == best:
                return best, ""
            return name, (f"{best} scored highest ({means[best]:.3f}); {name} ({means[name]:.3f}) is within one "
                          f"standard error of the paired fold differences ({se:.3f}) and comes first in decoder.candidates")
    return best, ""


class _InnerFolds:
    """Each candidate's probabilities on the inner folds' test epochs, fitted once per candidate and remembered.

    An ensemble's (``vote``) are its members' averaged, so it costs no fit of its own: exactly what its
    VotingClassifier fitted on the same epochs predicts, each member being deterministic; its seconds are its
    members'. A fit that fails (e.g. a covariance that is not positive definite) is remembered as its exception.
    """

    def __init__(self, es: EpochSet, sub: EpochSet, idx: np.ndarray, folds: list, feats: dict, protocol: Protocol,
                 teacher_logits, seed: int):
        self.es, self.sub, self.idx, self.folds, self.feats = es, sub, idx, folds, feats
        self.protocol, self.teacher_logits, self.seed = protocol, teacher_logits, seed
        self._preds: dict = {}
        self.seconds: dict = {}

    def has(self, name: str) -> bool:
        """Whether ``name``'s fold predictions are already made (as an ensemble's member)."""
        return name in self._preds

    def predictions(self, name: str):
        """Per fold, the test epochs' probabilities (n, classes); or the exception the fit raised."""
        from .pipelines import fitting_members

        if name in self._preds:
            return self._preds[name]
        t0 = time.perf_counter()
        n_classes = len(self.es.classes)
        parts = fitting_members(name, self.es.data.shape[1], n_classes)
        if parts:
            each = [self.predictions(m) for m in parts]
            bad = next((e for e in each if isinstance(e, Exception)), None)
            self._preds[name] = bad if bad is not None else [np.mean(f, 0) for f in zip(*each)]
            self.seconds[name] = sum(self.seconds[m] for m in parts)
            return self._preds[name]
        X, idx, split = self.feats[feature_key(name)], self.idx, self.protocol.training.split
        out = []
        try:
            for k, (tr_all, te) in enumerate(self.folds):
                tr, va = inner_validation(self.sub, tr_all, split, self.seed + k)
                # teacher logits, like feats, are indexed by position in ``es``
                fitted = fit_method(name, self.es, self.feats, idx[tr], idx[va], self.protocol, self.teacher_logits,
                                    False, self.seed + k)
                out.append(fitted.predict(X[idx[te]], n_classes))
            self._preds[name] = out
        except (ValueError, np.linalg.LinAlgError) as exc:
            self._preds[name] = exc
        self.seconds[name] = time.perf_counter() - t0
        return self._preds[name]


def select_model(es: EpochSet, protocol: Protocol, feats: dict, train_idx=None, teacher_logits=None,
                 seed: int = 0, progress: Optional[Callable[[str], None]] = None,
                 budget_s: float | None = None) -> Selection:
    """Compare ``protocol.decoder.candidates`` on inner folds of ``train_idx`` and return the winner."""
    from .pipelines import skip_reason

    say = progress or (lambda _m: None)
    dc = protocol.decoder
    split = protocol.training.split
    budget = dc.select_budget_s if budget_s is None else budget_s
    idx = np.arange(len(es)) if train_idx is None else np.asarray(train_idx)
    sub = es.subset(idx)
    n_classes = len(es.classes)
    metric = key_metric(n_classes)
    fallback = student(protocol.preprocessing.representation)
    t_start = time.perf_counter()
    try:
        folds = make_folds(sub, split, dc.inner_folds, seed)
    except (NoHonestFoldError, EegloopError) as exc:
        why = ("no honest inner fold (one class per block): candidates cannot be compared honestly"
               if isinstance(exc, NoHonestFoldError) else str(exc))
        logger.info("model selection: %s; keeping %s", why, fallback)
        return Selection(fallback, metric, split, 0, {}, note=f"{why}; kept the protocol's {fallback}")
    sel = Selection("", metric, split, len(folds))
    yy = sub.y
    folded = _InnerFolds(es, sub, idx, folds, feats, protocol, teacher_logits, seed)

    for name in dc.candidates:
        why = skip_reason(name, es.data.shape[1], n_classes)
        spent = time.perf_counter() - t_start
        if (why is None and spent >= budget and any("score" in c for c in sel.candidates.values())
                and not folded.has(name)):  # an ensemble's member, fitted already, costs nothing more
            why = f"decoder.select_budget_s ({budget:g} s) spent after {spent:.0f} s"
            sel.candidates[name] = {"skipped": why, "budget": True}
            continue
        if why:
            sel.candidates[name] = {"skipped": why}
            continue
        if is_network(name):
            X = feats[feature_key(name)]
            n_fit = int(np.mean([len(tr) for tr, _ in folds]))
            est = _seconds_per_fit(name, X[idx[:64]], n_fit, n_classes, protocol) * len(folds)
            left = budget - (time.perf_counter() - t_start)
            if est > left:
                sel.candidates[name] = {"skipped": f"about {est:.0f} s for {len(folds)} folds, {max(left, 0):.0f} s "
                                                   f"of decoder.select_budget_s left", "budget": True}
                say(f"selection: {name} skipped (about {est:.0f} s, {max(left, 0):.0f} s left)")
                continue
        ps = folded.predictions(name)
        if isinstance(ps, Exception):
            sel.candidates[name] = {"skipped": f"failed: {str(ps)[:120]}"}
            continue
        fold_scores = [scores(yy[te], p)[metric] for (_, te), p in zip(folds, ps)]
        sel.candidates[name] = {"score": round(float(np.nanmean(fold_scores)), 4),
                                "folds": [round(float(v), 4) for v in fold_scores],
                                "seconds": round(folded.seconds[name], 2)}
        say(f"selection: {name} {metric} {np.nanmean(fold_scores):.3f} ({folded.seconds[name]:.1f} s)")
    scored = {n: c["score"] for n, c in sel.candidates.items() if "score" in c}
    if not scored:
        sel.winner, sel.note = fallback, f"no candidate could be scored; kept the protocol's {fallback}"
    else:
        sel.winner, sel.note = _choose(list(dc.candidates),
                                       {n: c["folds"] for n, c in sel.candidates.items() if "score" in c})
    sel.seconds = time.perf_counter() - t_start
    logger.info("model selection: %s", sel.to_json())
    return sel
