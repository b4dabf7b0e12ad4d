"""The registry gate: same validation patients, then DeLong's paired one-sided test."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from cagerisk.config import typed
from cagerisk.config.modelling import GateConfig
from cagerisk.evaluation.metrics import delong_test
from cagerisk.tracking.gate import decide, gate_settings, same_validation_patients, validation_patients_sha256

# The shipped gate (conf/serve/default.yaml): superiority at alpha 0.05.
GATE = typed(
    OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "serve" / "default.yaml").gate, GateConfig, "serve.gate"
)


def gate(**changes) -> GateConfig:
    return replace(GATE, **changes)


def _scores(n: int, signal_new: float, signal_old: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    noise = rng.normal(size=(2, n))
    return y, signal_new * y + noise[0], signal_old * y + noise[1]


def test_validation_hash_ignores_order_and_sees_outcomes_and_patients():
    ids, y = ["p1", "p2", "p3"], [0, 1, 0]
    base = validation_patients_sha256(ids, y)
    assert validation_patients_sha256(ids[::-1], y[::-1]) == base
    assert validation_patients_sha256(ids, [0, 1, 1]) != base
    assert validation_patients_sha256(["p1", "p2", "p4"], y) != base
    with pytest.raises(ValueError, match="3 patient ids but 2 outcomes"):
        validation_patients_sha256(ids, y[:2])


def test_comparability_from_version_tags():
    ok, why = same_validation_patients({"val_patients_sha256": "a" * 64}, {"val_patients_sha256": "a" * 64})
    assert ok and "same validation patients" in why
    ok, why = same_validation_patients({"val_patients_sha256": "a" * 64}, {"val_patients_sha256": "b" * 64})
    assert not ok and "validated on other patients" in why and "bbbbbbbbbbbb vs aaaaaaaaaaaa" in why
    # A champion registered before the tag existed: matched on the training data hash.
    ok, _ = same_validation_patients(
        {"val_patients_sha256": "a" * 64, "training_data_sha256": "d"}, {"training_data_sha256": "d"}
    )
    assert ok
    ok, why = same_validation_patients(
        {"val_patients_sha256": "a" * 64, "training_data_sha256": "d"}, {"training_data_sha256": "e"}
    )
    assert not ok and "neither" in why


def test_superiority_p_is_delongs_one_sided_p():
    y, new, old = _scores(120, 1.6, 0.8)
    test = delong_test(y, new, old)
    decision = decide(y, new, old, gate())
    assert decision.z == pytest.approx(test.z) and decision.delong_z == pytest.approx(test.z)
    assert decision.p_value == pytest.approx(stats.norm.sf(test.z))
    assert decision.p_two_sided == pytest.approx(test.p_value)
    # Two-sided p is twice the one-sided one when the difference is positive.
    assert test.z > 0 and decision.p_value == pytest.approx(test.p_value / 2)
    assert decision.promote == (decision.p_value < 0.05)


def test_higher_point_estimate_by_noise_is_not_promoted():
    # Same signal, different noise: the new AUC is a little higher, but not significantly.
    for seed in range(20):
        y, new, old = _scores(40, 1.0, 1.0, seed)
        d = decide(y, new, old, gate())
        if d.auc_new > d.auc_champion and d.p_value >= 0.05:
            assert not d.promote and ">=" in d.reason and "not significantly higher" in d.reason
            break
    else:
        pytest.fail("no seed gave a higher but non-significant AUC")


def test_clearly_better_is_promoted_and_worse_is_not():
    y, strong, weak = _scores(200, 2.5, 0.3, seed=3)
    assert decide(y, strong, weak, gate()).promote
    worse = decide(y, weak, strong, gate())
    assert not worse.promote and "<" in worse.reason and worse.p_value > 0.95


def test_identical_rankings_never_replace_the_champion():
    y, new, _ = _scores(60, 1.0, 1.0)
    d = decide(y, new, new * 2.0 + 1.0, gate())  # same ranking, other scale
    assert d.difference == 0 and d.z == 0 and d.p_value == pytest.approx(0.5) and not d.promote


def test_non_inferiority_margin():
    # Equal-strength models on many patients: not superior, but non-inferior within 0.05.
    y, new, old = _scores(2000, 1.2, 1.2, seed=5)
    assert not decide(y, new, old, gate()).promote
    d = decide(y, new, old, gate(rule="non_inferiority", margin=0.05))
    test = delong_test(y, new, old)
    assert d.z == pytest.approx((test.difference + 0.05) / test.se)
    assert d.promote and "non-inferior within 0.05" in d.reason
    # Zero margin: non-inferiority equals superiority.
    assert decide(y, new, old, gate(rule="non_inferiority", margin=0.0)).p_value == pytest.approx(
        decide(y, new, old, gate()).p_value
    )


def test_settings_are_checked():
    assert gate_settings(GATE) == {"rule": "superiority", "alpha": 0.05, "margin": 0.0}
    with pytest.raises(ValueError, match="rule must be one of"):
        gate_settings(gate(rule=">="))
    with pytest.raises(ValueError, match="alpha"):
        gate_settings(gate(alpha=1.5))
    with pytest.raises(ValueError, match="margin"):
        gate_settings(gate(margin=-0.1))


def test_zero_delong_variance_uses_the_permutation_test_not_a_sure_answer():
    # 1.0 against 0.5 on 3 + 3 patients: DeLong's variance is 0, so its z would be infinite and any
    # such challenger promoted. The paired permutation test gives the exact p (2/64 two-sided).
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect, constant = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.full(6, 0.5)
    decision = decide(y, perfect, constant, gate())
    assert decision.p_value == pytest.approx(delong_test(y, perfect, constant).p_value / 2)
    assert 0.01 < decision.p_value < 0.05 and decision.promote
    y2 = np.array([0, 0, 1, 1])
    small = decide(y2, np.array([0.1, 0.2, 0.8, 0.9]), np.full(4, 0.5), gate())
    assert small.p_value > 0.05 and not small.promote  # 2 + 2 patients cannot show it
