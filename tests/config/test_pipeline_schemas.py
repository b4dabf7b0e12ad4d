"""Every preset of the pipeline-stage groups composes and types against its schema; bad values name the key."""

from __future__ import annotations

import pytest

from cagerisk.config import ConfigError, typed
from cagerisk.config.pipeline import (
    ComputeConfig,
    DeepConfig,
    ManifestCohortConfig,
    PathsConfig,
    RadiomicsConfig,
    ReproducibilityConfig,
    SegmentConfig,
    SyntheticCohortConfig,
    cohort_config,
)
from tests.conftest import CONF_DIR, compose_config

SCHEMAS = {
    "paths": PathsConfig,
    "compute": ComputeConfig,
    "segment": SegmentConfig,
    "radiomics": RadiomicsConfig,
    "deep": DeepConfig,
    "reproducibility": ReproducibilityConfig,
}


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "preset"), [(g, p) for g in SCHEMAS for p in presets(g)])
def test_every_preset_types(group: str, preset: str):
    cfg = compose_config([f"{group}={preset}", "cohort.manifest=/some/manifest.csv"])
    typed(cfg[group], SCHEMAS[group], group)


@pytest.mark.parametrize("preset", presets("cohort"))
def test_every_cohort_preset_types_by_its_source(preset: str):
    cfg = compose_config([f"cohort={preset}", "cohort.manifest=/some/manifest.csv"])
    typed_cohort = cohort_config(cfg.cohort)
    expected = SyntheticCohortConfig if cfg.cohort.source == "synthetic" else ManifestCohortConfig
    assert type(typed_cohort) is expected


def test_presets_exist_for_every_group():
    assert all(presets(g) for g in [*SCHEMAS, "cohort"])


def test_a_radiomics_preset_keeps_its_values_and_types():
    r = typed(compose_config(["radiomics=demo"]).radiomics, RadiomicsConfig, "radiomics")
    assert r.reader == "1" and r.params["ct"] == "ct.yaml"
    assert r.overrides["ct"]["setting"]["resampledPixelSpacing"] == [3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("radiomics.on_failure=skip", r"radiomics\.on_failure"),
        ("radiomics.reader=3", r"radiomics\.reader"),
        ("reproducibility.reader1_source=both", r"reproducibility\.reader1_source"),
        ("segment.mode=ternary", r"segment\.mode"),
        ("deep.imbalance=none", r"deep\.imbalance"),
        ("deep.batch_size=many", r"deep\.batch_size"),
        ("+segment.unknown_key=1", r"segment.*unknown_key"),
    ],
)
def test_bad_values_name_the_key(override: str, match: str):
    cfg = compose_config([override])
    group = override.lstrip("+").split(".")[0]
    with pytest.raises(ConfigError, match=match):
        typed(cfg[group], SCHEMAS[group], group)


def test_unknown_cohort_source_names_the_key():
    with pytest.raises(ConfigError, match=r"cohort\.source"):
        cohort_config(compose_config(["cohort.source=dicom_folder"]).cohort)
