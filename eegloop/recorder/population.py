"""A simulated population: one subject's own head and brain around class patterns the population shares.

``amplifier.simulate.seed`` fixes the class patterns (each class's sources: spatial patterns, carriers,
latency, ERP topography) and the background's structure; ``amplifier.simulate.subject`` draws, from the
subject number alone, what differs between people (:func:`subject_variation`):

- the spatial mixing ``M`` (channels x channels) through which the brain's signal (class responses, the
  1/f background, alpha) reaches the electrodes: head shape, cap placement, conductivities. ``M`` is the
  matrix exponential of a random matrix, so it is always invertible and near the identity: on the
  background's covariance ``C`` of the population, a subject's covariance is ``M C M^T``, the model behind
  Euclidean alignment (He & Wu 2019) and Riemannian re-centring (Zanini et al. 2018);
- a latency shift of every response (tens of ms: a subject's own speed);
- a background noise level (a factor on ``noise_uv``: some subjects give cleaner EEG than others).

Its trials (per-trial gain, jitter, phase) and background samples are the subject's own too, so two
subjects never share a noise realisation. The virtual amplifier (:mod:`.simulator`) applies all of it,
live and offline (``simulate_epochs``); ``subject: null`` leaves it untouched, bit for bit.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm

__all__ = ["SubjectVariation", "subject_variation", "subject_key"]

MIXING_SPREAD = 0.7  # scale of the log of the mixing: condition numbers ~4-6 (at most ~15 in 50 subjects)
LATENCY_SD_S = 0.02  # a subject's latency shift: normal, this standard deviation ...
LATENCY_MAX_S = 0.04  # ... clipped to ±this
NOISE_SD = 0.25  # the log of the subject's noise factor: normal, this standard deviation ...
NOISE_RANGE = (0.6, 1.6)  # ... the factor clipped to this range


@dataclass(frozen=True, eq=False)
class SubjectVariation:
    """What one simulated subject of a population has of their own.

    Attributes
    ----------
    subject : int
        The subject's number (``amplifier.simulate.subject``).
    mixing : np.ndarray
        (n_chans, n_chans): how the shared sources project onto this subject's channels.
    latency_s : float
        Added to the latency of every response, seconds.
    noise_scale : float
        The subject's background amplitude relative to ``simulate.noise_uv``.
    """

    subject: int
    mixing: np.ndarray
    latency_s: float
    noise_scale: float


@functools.lru_cache(maxsize=64)
def subject_variation(subject: int, n_chans: int) -> SubjectVariation:
    """Subject ``subject``'s own mixing, latency shift and noise level for ``n_chans`` channels.

    A function of (subject, n_chans) only, never of the population's seed: the same subject number is the
    same head in every population. The mixing is ``expm(MIXING_SPREAD * G / sqrt(n_chans))`` with ``G``
    standard normal, scaled to keep the signal's overall power (mean squared singular value 1).
    """
    rng = np.random.default_rng([int(subject), int(n_chans), 31])
    g = rng.standard_normal((n_chans, n_chans))
    mixing = expm(MIXING_SPREAD * g / np.sqrt(n_chans))
    mixing /= np.sqrt(np.mean(np.linalg.svd(mixing, compute_uv=False) ** 2))
    latency = float(np.clip(rng.normal(0.0, LATENCY_SD_S), -LATENCY_MAX_S, LATENCY_MAX_S))
    noise = float(np.clip(np.exp(rng.normal(0.0, NOISE_SD)), *NOISE_RANGE))
    mixing.setflags(write=False)
    return SubjectVariation(int(subject), mixing, latency, noise)


def subject_key(subject) -> list[int]:
    """The extra entropy a seeded generator takes for this subject: ``[]`` for none (today's draws, unchanged),
    ``[subject, 101]`` for a subject of a population."""
    return [] if subject is None else [int(subject), 101]
