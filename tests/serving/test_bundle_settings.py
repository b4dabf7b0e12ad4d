"""The serving bundle refuses radiomics settings other than those that made the training table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cagerisk.radiomics.params import params_by_sequence
from cagerisk.serving.bundle import BundleError, _check_radiomics_settings


def _params(cfg, sequences):
    return params_by_sequence(OmegaConf.to_container(cfg.radiomics, resolve=True), sequences)


def test_settings_other_than_the_tables_are_refused(make_config):
    cfg = make_config()
    summary = cfg.radiomics.summary
    params = _params(cfg, ["ct", "t2"])
    _check_radiomics_settings(summary, params)  # no summary yet: nothing to compare with

    Path(summary).parent.mkdir(parents=True, exist_ok=True)
    Path(summary).write_text(json.dumps({"settings_sha256": {s: p.sha256 for s, p in params.items()}}))
    _check_radiomics_settings(summary, params)  # the same settings pass

    fast = _params(make_config("radiomics=fast"), ["ct", "t2"])
    with pytest.raises(BundleError, match=r"\['ct', 't2'\].*radiomics="):
        _check_radiomics_settings(summary, fast)
    changed = _params(make_config("+radiomics.overrides.t2.setting.binWidth=10"), ["ct", "t2"])
    with pytest.raises(BundleError, match=r"\['t2'\]"):
        _check_radiomics_settings(summary, changed)
