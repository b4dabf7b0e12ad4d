"""Every preset of the model stages' config groups composes and types against its schema (cagerisk.config.modelling)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cagerisk.config import ConfigError, typed
from cagerisk.config.modelling import (
    ClassifierConfig,
    EvaluationConfig,
    FitTableConfig,
    RegistryConfig,
    SelectionConfig,
    SweepConfig,
    TableInputConfig,
    TrackingConfig,
    model_config,
)
from cagerisk.models.search import SearchSettings

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = {
    "sweep": SweepConfig,
    "selection": SelectionConfig,
    "classifier": ClassifierConfig,
    "evaluation": EvaluationConfig,
    "tracking": TrackingConfig,
}


def _compose(overrides: list[str], config_name: str = "config"):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name, overrides=overrides)


def _presets(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "preset"), [(g, p) for g in GROUPS for p in _presets(g)])
def test_every_preset_types(group, preset):
    cfg = _compose([f"{group}={preset}"])
    typed(cfg[group], GROUPS[group], group)


def test_the_fit_table_config_and_the_registry_keys_type():
    cfg = _compose(["table=t.csv"], "fit_table")
    assert typed(cfg.fit_table, FitTableConfig, "fit_table").outer_folds == 5
    assert typed({k: cfg[k] for k in ("table", "id_col", "label_col", "positive_label")}, TableInputConfig, "t").table == "t.csv"
    keys = ("model_name", "champion_alias", "challenger_alias", "on_incomparable", "gate")
    assert typed({k: cfg.serve[k] for k in keys}, RegistryConfig, "serve").gate.rule == "superiority"


def test_the_search_settings_are_the_sweep_yaml_values():
    """No sweep default lives in code: the settings are conf/sweep's, and both-null budgets are refused."""
    fast = model_config(_compose(["sweep=fast"]))
    settings = SearchSettings.from_sweep(fast.sweep, fast.seed)
    assert (settings.n_trials, settings.cv_folds, settings.pruner_startup_trials) == (20, 5, 5)
    assert settings.seed == 20260 and settings.storage.endswith("/optuna.db")
    with pytest.raises(ValueError, match="never stop"):
        SearchSettings.from_sweep(fast.sweep, 0, n_trials=None, timeout=None)


def test_a_wrong_value_names_its_key():
    with pytest.raises(ConfigError, match=r"sweep\.cv_folds"):
        model_config(_compose(["sweep.cv_folds=many"]))
    with pytest.raises(ConfigError, match=r"evaluation\.n_boot"):
        typed(_compose(["++evaluation.n_boot=10"]).evaluation, EvaluationConfig, "evaluation")
