"""Population properties of the documented latent model (20,000 draws, no images)."""

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cagerisk.cohort.latent import draw_patient, risk_logit, sigmoid


def population(n: int = 20000) -> pd.DataFrame:
    draws = [draw_patient(i, np.random.default_rng([99, i])) for i in range(n)]
    return pd.DataFrame(
        {
            "age": [d.age for d in draws],
            "bmi": [d.bmi for d in draws],
            "female": [d.sex == "F" for d in draws],
            "osteoporosis": [d.osteoporosis for d in draws],
            "n_levels": [d.n_levels for d in draws],
            "spondylolisthesis": [d.diagnosis == "spondylolisthesis" for d in draws],
            "herniation": [d.diagnosis == "herniation" for d in draws],
            "risk": [d.risk for d in draws],
            "cs": [d.cs for d in draws],
            "reader": [d.reader_probs[0] for d in draws],
            "age_ok": [36 <= d.age <= 90 for d in draws],
        }
    )


def test_prevalence_oracle_and_clinical_signal():
    pop = population()
    assert pop["age_ok"].all()
    assert 0.2 <= pop["cs"].mean() <= 0.3
    assert 0.4 <= pop["osteoporosis"].mean() <= 0.6
    oracle = roc_auc_score(pop["cs"], pop["risk"])
    assert 0.88 <= oracle <= 0.95
    clinical = pop[["age", "bmi", "female", "osteoporosis", "n_levels", "spondylolisthesis", "herniation"]].astype(float)
    half = len(pop) // 2
    model = LogisticRegression(max_iter=2000).fit(clinical[:half], pop["cs"][:half])
    clinical_auc = roc_auc_score(pop["cs"][half:], model.predict_proba(clinical[half:])[:, 1])
    # The clinical table explains part of the risk; the images must carry the rest.
    assert 0.65 <= clinical_auc <= 0.73
    # The simulated surgeons are informative but well below the oracle.
    assert 0.62 <= roc_auc_score(pop["cs"], pop["reader"]) <= 0.78


def test_risk_is_sigmoid_of_documented_logit():
    d = draw_patient(5, np.random.default_rng(1))
    z = risk_logit(d.latents, d.age, d.bmi, d.n_levels, d.diagnosis)
    assert d.logit == z and d.risk == sigmoid(z)
