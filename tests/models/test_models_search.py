"""The zoo builds every classifier; the cached-fold search scores what CV of the whole Pipeline would;
concurrent processes share one Optuna study in SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.pipeline import Pipeline
from synthetic_cohort import CONF, compose_config

from cagerisk.config.modelling import model_config
from cagerisk.features import build_selection_steps
from cagerisk.models.search import SearchSettings, cv_splits, search_classifier
from cagerisk.models.zoo import load_zoo, params_of_trial

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cfg():
    return compose_config(["selection.radiomics.lasso.cv=3", "selection.radiomics.lasso.n_alphas=15"])


def _settings(cfg, **overrides) -> SearchSettings:
    """The sweep preset's settings (conf/sweep/default.yaml), in memory unless a storage is given."""
    overrides.setdefault("storage", None)
    return SearchSettings.from_sweep(model_config(cfg).sweep, overrides.pop("seed", 0), **overrides)


def _data(n=80, p=30, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], [n - n // 3, n // 3])
    X = rng.normal(size=(n, p))
    X[:, :3] += y[:, None] * 1.0
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(p)], index=[f"P{i}" for i in range(n)]), y


def test_every_classifier_of_the_zoo_samples_builds_and_predicts(cfg):
    zoo = load_zoo(cfg.classifier)
    assert len(zoo) == 16 and {"stack", "lr_cv"} <= set(zoo)  # the study's 14 and the two defaults
    X, y = _data(60, 5)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for name, spec in zoo.items():
        trial = study.ask()
        params = spec.suggest(trial)
        assert set(params) == set(spec.space), name
        model = spec.build(params, seed=0)
        # Space minima where the size matters, so the check stays fast.
        small = {p: s["low"] for p, s in spec.space.items() if p in {"n_estimators"}}
        if name == "stack":
            small["n_estimators"] = 20
        model.set_params(**small)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proba = model.fit(X.to_numpy(), y).predict_proba(X.to_numpy())
        assert proba.shape == (60, 2) and np.isfinite(proba).all(), name
        study.tell(trial, 0.5)
    assert params_of_trial({"classifier": "lr", "lr.C": 0.1, "nb.var_smoothing": 1.0}) == ("lr", {"C": 0.1})
    with pytest.raises(ValueError, match="unknown classifiers"):
        load_zoo(cfg.classifier, include=["lr", "knn"])


def test_target_lists_narrow_the_global_include_list():
    """sweep.include.<target> within classifier.include; the default fits the stacked LR + trees for
    Rad-sign and a CV-tuned L2 LR elsewhere; sweep=study searches the study's 14 classifiers."""
    from cagerisk.models.signatures import target_selection_steps, target_zoo

    default = compose_config(["sweep=default"])
    assert {t: list(target_zoo(model_config(default), t)) for t in ("rad", "dl", "clinical", "combined")} == {
        "rad": ["stack"],
        "dl": ["lr_cv"],
        "clinical": ["lr_cv"],
        "combined": ["lr_cv"],
    }
    assert [n for n, _ in target_selection_steps(model_config(default), "rad", "radiomics")] == ["impute"]
    assert [n for n, _ in target_selection_steps(model_config(default), "dl", "deep")] == ["impute", "reduce"]
    fast = compose_config(["sweep=fast"])
    assert list(target_zoo(model_config(fast), "rad")) == ["stack"] and fast.sweep.cv_folds == 5
    study = compose_config(["sweep=study"])
    assert len(target_zoo(model_config(study), "rad")) == 14 and not {"stack", "lr_cv"} & set(
        target_zoo(model_config(study), "rad")
    )
    assert list(target_zoo(model_config(study), "dl")) == ["lr", "svm_linear"]
    assert list(target_zoo(model_config(study), "combined")) == ["lr"]
    assert [n for n, _ in target_selection_steps(model_config(study), "rad", "radiomics")] == [
        "impute",
        "scale",
        "ftest",
        "pearson",
        "lasso",
    ]
    both = compose_config(["sweep=study", "classifier.include=[nb,svm_linear,lr]"])
    assert list(target_zoo(model_config(both), "dl")) == ["lr", "svm_linear"]
    assert list(target_zoo(model_config(both), "rad")) == ["lr", "nb", "svm_linear"]  # the target list's order
    whole = compose_config(["sweep=study", "sweep.include.dl=null"])
    assert len(target_zoo(model_config(whole), "dl")) == 16
    # Nothing in common: the explicit classifier.include wins (what the user typed).
    disjoint = compose_config(["sweep=default", "classifier.include=[nb,dt]"])
    assert list(target_zoo(model_config(disjoint), "combined")) == ["nb", "dt"]
    with pytest.raises(ValueError, match=r"selection.radiomics has no step\(s\) \['anova'\]"):
        target_selection_steps(model_config(compose_config(["sweep.selection_steps.rad=[impute,anova]"])), "rad", "radiomics")


def test_cached_folds_score_exactly_what_cv_of_the_whole_pipeline_scores(cfg):
    X, y = _data()
    steps = build_selection_steps(cfg.selection, "radiomics", seed=0)
    zoo = load_zoo(cfg.classifier, include=["lr"])
    settings = _settings(cfg, n_trials=2, cv_folds=4, seed=3, pruner=None, log_trials=False)
    result = search_classifier("rad", X, y, steps, zoo, settings)
    best = result.trials.dropna(subset=["cv_auc"]).sort_values("cv_auc").iloc[-1]
    pipeline = Pipeline([*((n, clone(s)) for n, s in steps), ("classifier", zoo["lr"].build(result.best_params, seed=3))])
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=3)
    reference = cross_val_score(pipeline, X, y, cv=folds, scoring="roc_auc").mean()
    assert best["cv_auc"] == pytest.approx(reference, abs=1e-12)
    assert result.cv_auc == pytest.approx(reference, abs=1e-12)
    # Training-split signatures are out-of-fold: identical to cross_val_predict, not in-sample.
    oof = cross_val_predict(pipeline, X, y, cv=folds, method="predict_proba")[:, 1]
    np.testing.assert_allclose(result.oof_proba, oof, atol=1e-12)
    in_sample = result.pipeline.predict_proba(X)[:, 1]
    assert not np.allclose(result.oof_proba, in_sample)
    assert [t[2] for t in cv_splits(y, 4, 2, 0)] == [0] * 4 + [1] * 4


def test_a_rerun_on_the_same_data_adds_no_trial_and_a_changed_table_gets_a_new_study(cfg, tmp_path):
    X, y = _data(60, 8)
    zoo = load_zoo(cfg.classifier, include=["lr", "nb"])
    settings = _settings(
        cfg, n_trials=3, cv_folds=3, storage=f"sqlite:///{tmp_path}/o.db", seed=1, pruner=None, log_trials=False, fit_best=False
    )
    first = search_classifier("rad", X, y, [], zoo, settings)
    again = search_classifier("rad", X, y, [], zoo, settings)
    assert (first.n_trials_added, again.n_trials_added, again.n_trials_total) == (3, 0, 3)
    assert (again.best_classifier, again.best_params) == (first.best_classifier, first.best_params)
    changed = search_classifier("rad", X.assign(f0=X["f0"] + 1.0), y, [], zoo, settings)
    assert changed.study_name != first.study_name and changed.n_trials_added == 3


WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np, pandas as pd
    from hydra import compose, initialize_config_dir
    from cagerisk.features import build_selection_steps
    from cagerisk.config.modelling import model_config
    from cagerisk.models.search import SearchSettings, search_classifier
    from cagerisk.models.zoo import load_zoo

    worker, storage, ready_dir = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    with initialize_config_dir(version_base="1.3", config_dir=sys.argv[4]):
        cfg = compose("config", overrides=["selection.radiomics.lasso.cv=3", "selection.radiomics.lasso.n_alphas=10"])
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [50, 25])
    X = pd.DataFrame(rng.normal(size=(75, 20)) + y[:, None] * np.r_[np.ones(3), np.zeros(17)],
                     columns=[f"f{i}" for i in range(20)])
    steps = build_selection_steps(cfg.selection, "radiomics", seed=0)
    zoo = load_zoo(cfg.classifier, include=["lr", "nb", "dt"])
    # max_degenerate_share=None: a decision tree's pure leaves would fail some trials (a guard tested
    # elsewhere), and which ones depends on the two processes' interleaving; here every trial must complete.
    settings = SearchSettings.from_sweep(model_config(cfg).sweep, 0, n_trials=12, cv_folds=3, storage=storage,
                                         study_name="concurrent", worker=worker, pruner=None, sampler_startup_trials=2,
                                         fit_best=False, log_trials=False, max_degenerate_share=None)
    # Both processes start their trials together, so they really write to one study at once.
    (ready_dir / f"ready{worker}").touch()
    deadline = time.time() + 120
    while len(list(ready_dir.glob("ready*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    result = search_classifier("rad", X, y, steps, zoo, settings)
    print(result.study_name, result.n_trials_added, result.n_trials_total)
    """
)


def test_study_fingerprint_text_is_the_same_in_every_process(cfg):
    """The clinical/combined preprocessor holds functions (FunctionTransformer), whose repr carries a
    memory address: the fingerprint must not, or every run starts a fresh study. Steps without such
    values keep their plain repr, so existing signature studies keep their names."""
    from cagerisk.models.search import step_settings

    code = textwrap.dedent(
        """
        import pandas as pd
        from cagerisk.models.clinical import clinical_preprocessor
        from cagerisk.models.search import step_settings
        frame = pd.DataFrame({"sex": ["M", "F"], "age": [50.0, 60.0], "rad_sign": [0.2, 0.3]})
        print(step_settings(clinical_preprocessor(frame, ["sex", "age"], ["rad_sign"])))
        """
    )
    texts = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True).stdout
        for _ in range(2)
    ]
    assert texts[0] == texts[1] and " at 0x" not in texts[0]
    assert "cagerisk.models.clinical.logit_clipped" in texts[0]
    for _, step in build_selection_steps(cfg.selection, "radiomics", seed=0) + build_selection_steps(
        cfg.selection, "deep", seed=0
    ):
        assert step_settings(step) == repr(sorted(step.get_params(deep=True).items(), key=lambda kv: kv[0]))


def test_two_concurrent_processes_share_one_sqlite_study(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(w), storage, str(tmp_path), str(CONF)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            cwd=ROOT,
        )
        for w in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=False):
        assert proc.returncode == 0, err[-3000:]
    study_names = {out.split()[0] for out, _ in outputs}
    assert len(study_names) == 1, "same data and set-up must give the same study"
    study = optuna.load_study(study_name=study_names.pop(), storage=storage)
    trials = study.get_trials(deepcopy=False)
    # The study's budget of 12 trials is shared: each process stops when the study is full (one
    # trial of overshoot per extra process at most), and both processes' trials are in it.
    assert 12 <= len(trials) <= 13
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    workers = [t.user_attrs["worker"] for t in trials]
    assert set(workers) == {0, 1}
    added = [int(out.split()[1]) for out, _ in outputs]
    assert sorted(added) == sorted([workers.count(0), workers.count(1)])
    assert len({t.number for t in trials}) == len(trials)


def test_a_classifier_with_zero_one_probabilities_fails_its_trials(cfg, tmp_path):
    """Naive Bayes on many strong features gives probabilities of exactly 0 or 1: with the guard on
    (sweep.max_degenerate_share) its trials fail with the reason and the logistic regression wins;
    with the guard off the same naive Bayes trial completes."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    X = pd.DataFrame(rng.normal(size=(80, 40)) + 3.0 * y[:, None], columns=[f"f{i}" for i in range(40)])
    zoo = load_zoo(cfg.classifier, include=["nb", "lr"])
    guarded = _settings(cfg, n_trials=4, cv_folds=3, storage=f"sqlite:///{tmp_path}/a.db", pruner=None, log_trials=False)
    result = search_classifier("rad", X, y, [], zoo, guarded)
    trials = result.trials
    nb = trials[trials["classifier"] == "nb"] if "classifier" in trials else trials.iloc[0:0]
    assert len(nb) and (nb["state"] == "FAIL").all(), trials
    assert result.best_classifier == "lr"
    off = _settings(
        cfg,
        n_trials=4,
        cv_folds=3,
        storage=f"sqlite:///{tmp_path}/b.db",
        pruner=None,
        log_trials=False,
        max_degenerate_share=None,
    )
    unguarded = search_classifier("rad", X, y, [], load_zoo(cfg.classifier, include=["nb"]), off)
    assert (unguarded.trials["state"] == "COMPLETE").all()
