"""Which methods are ensembles of others, and of which: plain data, read by the registry (:mod:`.methods`) and by
the pipelines that build them (:mod:`.pipelines`), which must not import each other both ways."""
from __future__ import annotations

__all__ = ["ENSEMBLES"]

#: ensemble name -> its members; ``vote``: scikit-learn's soft VotingClassifier over these pipelines
ENSEMBLES: dict[str, tuple[str, ...]] = {"vote": ("lda_windowed", "logreg_windowed", "riemann")}
