"""Clinical variables and the latent risk of the synthetic cohort.

The outcome is drawn from a documented latent model so that every later stage can be judged against
the truth (``truth.csv`` holds each patient's risk, ``oracle.json`` the oracle AUC).

Latent patient state, each standardised to mean 0 and unit variance in the population:

* ``bone_loss``   - loss of vertebral bone mineral density. Rises with age, more in women. The clinical
                    ``osteoporosis`` flag is a noisy threshold of it (about half the cohort, as in the
                    study). Images: lower trabecular HU and thinner cortex on CT, fattier (brighter)
                    marrow on T1/T2.
* ``texture``     - trabecular micro-architecture deterioration: coarser and more heterogeneous
                    trabecular texture on CT and MRI (longer correlation length, larger amplitude).
* ``endplate``    - endplate weakness: thinner, less dense endplates on CT, Modic-like marrow bands
                    next to the endplates on MRI.
* ``disc``        - disc degeneration: lower disc height, dehydrated nucleus (dark on T2), vacuum gas
                    on CT when severe.
* ``muscle_fat``  - paraspinal / psoas / quadratus fatty infiltration and atrophy: lower CT HU, fatty
                    streaks on T1/T2, smaller cross-section.

Risk of cage subsidence (logit scale)::

    z = b0 + 1.5 bone_loss + 0.8 texture + 1.0 endplate + 0.6 disc + 0.7 muscle_fat
           + 0.1 age_z + 0.15 bmi_z + 0.2 (n_levels - 1) + 0.2 [spondylolisthesis]
    risk = sigmoid(z),  cs ~ Bernoulli(risk)

with ``b0 = -2.5`` so that the prevalence is about 25 % (oracle AUC about 0.92 in the population).
The clinical table carries age, sex, BMI, diagnosis, number of levels and the noisy osteoporosis flag,
which explain part of ``z`` (clinical-only AUC about 0.72 with the population's own coefficients, less
when fitted on a small cohort); the images carry the rest. Two simulated surgeons read a noisy, partial view of
the same state (they see the clinical picture and gross image findings, not texture).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cagerisk.cohort.schema import LEVELS

RISK_WEIGHTS: dict[str, float] = {
    "bone_loss": 1.5,
    "texture": 0.8,
    "endplate": 1.0,
    "disc": 0.6,
    "muscle_fat": 0.7,
    "age_z": 0.1,
    "bmi_z": 0.15,
    "extra_levels": 0.2,
    "spondylolisthesis": 0.2,
}
# Intercept: gives a prevalence of about 25 % (checked by tests on 20,000 draws).
RISK_INTERCEPT = -2.5

AGE_MEAN, AGE_SD = 62.0, 10.0
BMI_MEAN, BMI_SD = 25.5, 3.6
DIAGNOSES = ("stenosis", "spondylolisthesis", "herniation")
DIAGNOSIS_P = (0.5, 0.3, 0.2)
# How often each level is fused as the lowest fused level (L4-L5 and L5-S1 dominate).
LOWEST_LEVEL_P = {"L2-L3": 0.04, "L3-L4": 0.16, "L4-L5": 0.5, "L5-S1": 0.30}
N_LEVELS_P = (0.6, 0.3, 0.1)


@dataclass(frozen=True)
class Latents:
    bone_loss: float
    texture: float
    endplate: float
    disc: float
    muscle_fat: float


@dataclass(frozen=True)
class PatientDraw:
    """Everything drawn for one patient before any image exists."""

    index: int
    sex: str
    age: float
    bmi: float
    diagnosis: str
    fused_levels: tuple[str, ...]
    osteoporosis: int
    followup_months: float
    latents: Latents
    logit: float
    risk: float
    cs: int
    reader_probs: tuple[float, float]

    @property
    def n_levels(self) -> int:
        return len(self.fused_levels)

    def latent_dict(self) -> dict[str, float]:
        return asdict(self.latents)


def sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def risk_logit(latents: Latents, age: float, bmi: float, n_levels: int, diagnosis: str) -> float:
    """The documented latent model (module docstring)."""
    w = RISK_WEIGHTS
    return float(
        RISK_INTERCEPT
        + w["bone_loss"] * latents.bone_loss
        + w["texture"] * latents.texture
        + w["endplate"] * latents.endplate
        + w["disc"] * latents.disc
        + w["muscle_fat"] * latents.muscle_fat
        + w["age_z"] * (age - AGE_MEAN) / AGE_SD
        + w["bmi_z"] * (bmi - BMI_MEAN) / BMI_SD
        + w["extra_levels"] * (n_levels - 1)
        + w["spondylolisthesis"] * (diagnosis == "spondylolisthesis")
    )


def draw_fused_levels(rng: np.random.Generator, n_levels: int) -> tuple[str, ...]:
    lowest = rng.choice(list(LOWEST_LEVEL_P), p=list(LOWEST_LEVEL_P.values()))
    low = LEVELS.index(str(lowest))
    first = max(0, low - n_levels + 1)
    return tuple(LEVELS[first : first + n_levels])


def draw_patient(index: int, rng: np.random.Generator) -> PatientDraw:
    """One patient's clinical variables, latent state, outcome and readers' impressions."""
    sex = "F" if rng.random() < 0.58 else "M"
    # Rounded as a clinical table records them; the risk uses the recorded values.
    age = round(float(np.clip(rng.normal(AGE_MEAN, AGE_SD), 36, 90)), 1)
    bmi = round(float(np.clip(rng.normal(BMI_MEAN, BMI_SD), 16.5, 42)), 1)
    diagnosis = str(rng.choice(DIAGNOSES, p=DIAGNOSIS_P))
    n_levels = int(rng.choice([1, 2, 3], p=N_LEVELS_P))
    levels = draw_fused_levels(rng, n_levels)
    age_z = (age - AGE_MEAN) / AGE_SD
    bmi_z = (bmi - BMI_MEAN) / BMI_SD
    female = 1.0 if sex == "F" else 0.0
    # Standardised latents; the coefficients keep each at unit variance in the population.
    bone_loss = 0.2 * age_z + 0.35 * (female - 0.58) + 0.96 * rng.normal()
    texture = 0.45 * bone_loss + 0.85 * rng.normal()
    endplate = 0.3 * bone_loss + 0.95 * rng.normal()
    disc = 0.3 * age_z + 0.95 * rng.normal()
    muscle_fat = 0.3 * age_z + 0.25 * bmi_z + 0.92 * rng.normal()
    latents = Latents(
        bone_loss=float(bone_loss),
        texture=float(texture),
        endplate=float(endplate),
        disc=float(disc),
        muscle_fat=float(muscle_fat),
    )
    # DXA is a noisy, thresholded view of bone loss: about half the cohort is osteoporotic.
    osteoporosis = int(bone_loss + 1.5 * rng.normal() > 0.0)
    followup = float(np.round(np.clip(rng.gamma(6.0, 4.5), 12, 120), 1))
    logit = risk_logit(latents, age, bmi, n_levels, diagnosis)
    risk = float(sigmoid(logit))
    cs = int(rng.random() < risk)
    # Surgeons judge from the clinical picture and gross imaging (bone density, disc height), each
    # with his own noise and bias; they see neither texture nor endplate micro-structure.
    gross = 0.8 * osteoporosis + 0.3 * bone_loss + 0.3 * disc + 0.3 * age_z + 0.3 * (n_levels - 1)
    readers = tuple(float(sigmoid(1.1 * gross - 1.2 + bias + 1.0 * rng.normal())) for bias in (0.0, 0.25))
    return PatientDraw(
        index=index,
        sex=sex,
        age=age,
        bmi=bmi,
        diagnosis=diagnosis,
        fused_levels=levels,
        osteoporosis=osteoporosis,
        followup_months=followup,
        latents=latents,
        logit=logit,
        risk=risk,
        cs=cs,
        reader_probs=(readers[0], readers[1]),
    )
