"""The registry gate: when may a new model version take the champion alias from the current one?

Two questions, in this order:

1. **Were both scored on the same validation patients?** Each registered version carries
   ``val_patients_sha256``, a hash of its validation patients' ids and outcomes. A champion validated
   on other patients (another cohort, a re-split) cannot be compared: its "validation" AUC on today's
   patients may include patients it was trained on. The gate then says so and does not promote.
   Versions registered before that tag existed are matched on ``training_data_sha256`` instead.
2. **Is the new version better, by DeLong's test?** Both versions score the same validation
   patients; DeLong's paired test of the two AUCs gives ``z = (AUC_new - AUC_champion) / se``.
   With ``rule: superiority`` (the default) the new version is promoted only when its AUC is higher
   with one-sided ``p = P(Z >= z) < alpha``: a point estimate that is higher by noise does not replace
   a champion. With ``rule: non_inferiority`` it is promoted when the null "worse by ``margin`` or
   more" is rejected: ``z = (AUC_new - AUC_champion + margin) / se`` and ``P(Z >= z) < alpha``.
   Identical rankings (se = 0) give z = 0 and p = 0.5 under superiority: a retrained twin never
   replaces the champion.

Nothing here touches MLflow; ``registry.py`` feeds the scores and records the decision.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from cagerisk.config.modelling import GateConfig

RULES = ("superiority", "non_inferiority")


def validation_patients_sha256(patient_ids: Sequence[Any], outcomes: Sequence[Any]) -> str:
    """Order-free hash of (patient id, outcome) pairs: equal exactly when the validation sets are."""
    if len(patient_ids) != len(outcomes):
        raise ValueError(f"{len(patient_ids)} patient ids but {len(outcomes)} outcomes")
    lines = sorted(f"{pid}\t{int(y)}" for pid, y in zip(patient_ids, outcomes, strict=False))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def gate_settings(gate: GateConfig) -> dict[str, Any]:
    """``serve.gate`` (values from ``conf/serve``) checked, as the dict the decision records."""
    if gate.rule not in RULES:
        raise ValueError(f"serve.gate.rule must be one of {RULES}, got {gate.rule!r}")
    if not 0.0 < gate.alpha < 1.0:
        raise ValueError(f"serve.gate.alpha must be in (0, 1), got {gate.alpha}")
    if gate.margin < 0.0:
        raise ValueError(f"serve.gate.margin must be >= 0, got {gate.margin}")
    return {"rule": gate.rule, "alpha": gate.alpha, "margin": gate.margin}


def same_validation_patients(new_tags: Mapping[str, str], champion_tags: Mapping[str, str]) -> tuple[bool, str]:
    """(comparable, why) from the two versions' tags."""
    new_val, old_val = new_tags.get("val_patients_sha256"), champion_tags.get("val_patients_sha256")
    if new_val and old_val:
        if new_val == old_val:
            return True, "same validation patients (val_patients_sha256)"
        return False, (f"the champion was validated on other patients (val_patients_sha256 {old_val[:12]} vs {new_val[:12]})")
    new_data, old_data = new_tags.get("training_data_sha256"), champion_tags.get("training_data_sha256")
    if new_data and old_data and new_data == old_data:
        return True, "same training data (training_data_sha256), hence the same validation patients"
    return False, (
        "the champion records neither the same validation patients nor the same training data "
        f"(training_data_sha256 {str(old_data)[:12]} vs {str(new_data)[:12]})"
    )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    rule: str
    alpha: float
    margin: float
    auc_new: float
    auc_champion: float
    difference: float
    se: float
    z: float
    p_value: float  # one-sided p-value of the rule's null hypothesis
    p_two_sided: float  # DeLong's two-sided test of equal AUCs, as `evaluation.metrics.delong_test` gives it
    delong_z: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_sided(diff: float, se: float, shift: float, upper: bool) -> tuple[float, float]:
    """(z, p) of H0: diff + shift <= 0 (upper) with a DeLong standard error; se = 0 is a sure answer."""
    value = diff + shift
    if se > 0:
        z = value / se
    else:
        z = math.copysign(math.inf, value) if value != 0 else 0.0
    p = float(stats.norm.sf(z)) if upper else float(stats.norm.cdf(z))
    return float(z), p


def decide(
    y: np.ndarray, new_prob: np.ndarray, champion_prob: np.ndarray, gate: GateConfig, n: int | None = None
) -> GateDecision:
    """Apply the gate's rule to two scores of the same validation patients (see the module docstring)."""
    from cagerisk.evaluation.metrics import delong_test

    s = gate_settings(gate)
    test = delong_test(y, new_prob, champion_prob)
    n = len(y) if n is None else n
    diff, se = float(test.auc1 - test.auc2), float(test.se)
    sign = "<" if diff < 0 else ">="
    head = f"validation AUC {test.auc1:.4f} {sign} champion's {test.auc2:.4f} on the same {n} patients"
    if s["rule"] == "superiority":
        z, p = _one_sided(diff, se, 0.0, upper=True)
        if test.method == "permutation":
            # DeLong's variance is 0 although the AUCs differ (tiny or separated sets): its z would be
            # infinite. The paired permutation test stands in; its two-sided p halves to one side.
            z, p = math.nan, (float(test.p_value) / 2.0 if diff > 0 else 1.0 - float(test.p_value) / 2.0)
        promote = p < s["alpha"]
        verdict = (
            f"higher by DeLong's one-sided test (z = {z:.3g}, p = {p:.3g} < alpha {s['alpha']:g}): promoted"
            if promote
            else (
                f"not significantly higher (DeLong one-sided z = {z:.3g}, p = {p:.3g} >= alpha {s['alpha']:g}): "
                "the champion stays"
            )
        )
    else:
        # Null: the new model is worse by `margin` or more; rejecting it shows non-inferiority.
        z, p = _one_sided(diff, se, s["margin"], upper=True)
        promote = p < s["alpha"]
        verdict = (
            f"non-inferior within {s['margin']:g} by DeLong's one-sided test "
            f"(z = {z:.3g}, p = {p:.3g} < alpha {s['alpha']:g}): promoted"
            if promote
            else f"non-inferiority within {s['margin']:g} not shown "
            f"(DeLong one-sided z = {z:.3g}, p = {p:.3g} >= alpha {s['alpha']:g}): the champion stays"
        )
    return GateDecision(
        promote=bool(promote),
        rule=s["rule"],
        alpha=s["alpha"],
        margin=s["margin"],
        auc_new=float(test.auc1),
        auc_champion=float(test.auc2),
        difference=diff,
        se=se,
        z=z,
        p_value=p,
        p_two_sided=float(test.p_value),
        delong_z=float(test.z),
        reason=f"{head}: {verdict}" + (f" [{test.note}]" if test.note else ""),
    )
