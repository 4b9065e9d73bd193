"""Output-distribution gate: KL(baseline || candidate) from output histogram counts.

Both arms' bucket counts over the step are smoothed with a pseudo-count per
bucket (so an empty bucket is never log(0)) and compared with scipy's
relative entropy. The plug-in estimate is biased upwards by about
(K - 1) / 2 x (1/n_b + 1/n_c) for K occupied buckets, so that is subtracted;
its variance comes from the delta method plus the chi-square term that
dominates near zero. The gate fails when a normal-mixture confidence sequence
puts the divergence confidently above ``max_kl``.

Each histogram observation counts as one sample. Outputs of one request are
not fully independent; ``min_outputs`` and the boundary's width keep a small
sample from deciding, and docs/analysis.md discusses the assumption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from gelu_rollout.analysis.observations import StepEvidence
from gelu_rollout.analysis.sequential import exceeds_normal_mixture, mixture_rho
from gelu_rollout.analysis.verdict import GateResult, Verdict, inconclusive

GATE = "divergence"


@dataclass(frozen=True)
class KLEstimate:
    value: float  # bias-corrected KL(baseline || candidate), nats
    raw: float  # plug-in value of the smoothed histograms
    variance: float
    baseline_outputs: float
    candidate_outputs: float


def kl_divergence(baseline: Sequence[float], candidate: Sequence[float], smoothing: float) -> float:
    """KL(baseline || candidate) in nats between two smoothed histograms."""
    p = np.asarray(baseline, dtype=float) + smoothing
    q = np.asarray(candidate, dtype=float) + smoothing
    return float(special.rel_entr(p / p.sum(), q / q.sum()).sum())


def estimate_kl(
    baseline: Sequence[float], candidate: Sequence[float], smoothing: float
) -> KLEstimate:
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(candidate, dtype=float)
    nb, nc = float(b.sum()), float(c.sum())
    p = (b + smoothing) / (b + smoothing).sum()
    q = (c + smoothing) / (c + smoothing).sum()
    log_ratio = np.log(p / q)
    raw = float(special.rel_entr(p, q).sum())
    occupied = int(np.count_nonzero(b + c))
    h = 1.0 / max(nb, 1.0) + 1.0 / max(nc, 1.0)
    bias = max(occupied - 1, 0) / 2.0 * h
    delta_var = (float((p * log_ratio**2).sum()) - raw**2) / max(nb, 1.0) + (
        float((p**2 / q).sum()) - 1.0
    ) / max(nc, 1.0)
    null_var = max(occupied - 1, 0) / 2.0 * h**2
    return KLEstimate(raw - bias, raw, max(delta_var, 0.0) + null_var, nb, nc)


def _finite(value: float) -> float | None:
    """The normal-mixture bound is -inf without information: no bound to report."""
    return value if math.isfinite(value) else None


def divergence_gate(
    evidence: StepEvidence,
    *,
    max_kl: float,
    min_outputs: int,
    smoothing: float,
    alpha: float,
    max_abs_error: float | None = None,
    missing: str = "no output histogram from both arms and no sample was compared",
) -> GateResult:
    """The KL test on the output histograms of :meth:`StepEvidence.outputs_for_divergence`.

    On the sampled comparison, where both arms answered the same inputs, the gate also fails
    as soon as an answer differs from the baseline's by more than ``max_abs_error``: the
    candidate passed the same limit before any traffic, so it has drifted since.
    ``missing``: what to say when there is no source of outputs at all.
    """
    source = evidence.outputs_for_divergence()
    if source is None:
        return inconclusive(GATE, missing, no_data=True)
    origin = f"(from {source.source})"
    b, c = source.baseline.histogram, source.candidate.histogram
    nb, nc = sum(b), sum(c)
    if (
        max_abs_error is not None
        and source.max_abs_error is not None
        and source.max_abs_error > max_abs_error
    ):
        return GateResult(
            GATE,
            Verdict.FAIL,
            source.max_abs_error,
            max_abs_error,
            source.candidate.requests,
            evidence.seconds,
            f"the candidate's answers to the sampled inputs differ from the baseline's by up "
            f"to {source.max_abs_error:.3g} (limit {max_abs_error:g}) over "
            f"{source.candidate.requests:.0f} rows",
        )
    if len(b) != len(c):
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            None,
            max_kl,
            0.0,
            evidence.seconds,
            f"the arms' output histograms differ in buckets ({len(b)} vs {len(c)}): "
            "their models export different bucket bounds",
        )
    if not b or nb <= 0 or nc <= 0:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            None,
            max_kl,
            min(nb, nc),
            evidence.seconds,
            f"no output histogram samples from both arms yet {origin}",
        )
    est = estimate_kl(b, c, smoothing)
    samples = min(nb, nc)
    information = 1.0 / est.variance if est.variance > 0 else 0.0
    # Tightest where the standard error is a quarter of the tolerance.
    rho = mixture_rho((4.0 / max_kl) ** 2, alpha)
    failed, lower = exceeds_normal_mixture(est.value, max_kl, information, alpha, rho)
    if failed and samples >= min_outputs / 4:
        return GateResult(
            GATE,
            Verdict.FAIL,
            est.value,
            max_kl,
            samples,
            evidence.seconds,
            f"KL(baseline||candidate) {est.value:.4f} over {samples:.0f} outputs {origin}; "
            f"lower bound {lower:.4f} exceeds {max_kl:g}",
            bound=_finite(lower),
        )
    if samples < min_outputs:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            est.value,
            max_kl,
            samples,
            evidence.seconds,
            f"{samples:.0f} of {min_outputs} outputs per arm needed {origin}; KL {est.value:.4f}",
            bound=_finite(lower),
        )
    if est.value > max_kl:
        return GateResult(
            GATE,
            Verdict.INCONCLUSIVE,
            est.value,
            max_kl,
            samples,
            evidence.seconds,
            f"KL {est.value:.4f} above {max_kl:g} but not yet significant "
            f"(lower bound {max(lower, 0.0):.4f}) {origin}",
            bound=_finite(lower),
        )
    return GateResult(
        GATE,
        Verdict.PASS,
        est.value,
        max_kl,
        samples,
        evidence.seconds,
        f"KL(baseline||candidate) {max(est.value, 0.0):.4f} over {samples:.0f} outputs "
        f"(limit {max_kl:g}) {origin}",
        bound=_finite(lower),
    )
