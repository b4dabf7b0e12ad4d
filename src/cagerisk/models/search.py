"""Optuna search of classifier and hyperparameters by stratified k-fold CV AUC, in RDB storage.

The steps before the classifier (selection, or the preprocessing of clinical variables) do not
depend on the classifier's hyperparameters, so they are fitted once per CV fold and reused by every
trial: each trial then scores exactly what ``cross_val_score`` of the whole Pipeline would, on the
same folds, at a fraction of the cost. Nothing of a fold's validation part reaches its fitted steps.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import optuna
import pandas as pd
import sqlalchemy
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from cagerisk.config.modelling import SweepConfig
from cagerisk.models.served import positive_proba  # noqa: F401 (re-exported)
from cagerisk.models.zoo import CLASSIFIER_PARAM, ClassifierSpec, params_of_trial, suggest_classifier

log = logging.getLogger(__name__)

Steps = Sequence[tuple[str, BaseEstimator]]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class SearchSettings:
    """How one search runs: the ``sweep`` config's values (:meth:`from_sweep`) and the seed.

    No field has a default: the values live in ``conf/sweep/*.yaml`` only.
    """

    n_trials: int | None
    timeout: float | None
    cv_folds: int
    cv_repeats: int
    storage: str | None
    study_name: str
    seed: int
    worker: int
    pruner: str | None
    pruner_startup_trials: int
    sampler_startup_trials: int
    sqlite_timeout: float
    fit_best: bool
    log_trials: bool
    # A trial fails when more than this share of its validation probabilities lie within 1e-6 of 0 or 1
    # (naive Bayes, pure tree leaves): such a signature cannot be calibrated or thresholded. None: off.
    max_degenerate_share: float | None

    def __post_init__(self) -> None:
        if self.n_trials is None and self.timeout is None:
            raise ValueError("sweep.n_trials and sweep.timeout are both null: the search would never stop")

    @classmethod
    def from_sweep(cls, sweep: SweepConfig, seed: int, **overrides: Any) -> SearchSettings:
        """The settings of ``sweep`` (typed ``conf/sweep``) with ``seed``; ``overrides`` replace fields."""
        values = {
            "n_trials": sweep.n_trials,
            "timeout": sweep.timeout,
            "cv_folds": sweep.cv_folds,
            "cv_repeats": sweep.cv_repeats,
            "storage": sweep.storage,
            "study_name": sweep.study_name,
            "seed": seed,
            "worker": sweep.worker,
            "pruner": sweep.pruner,
            "pruner_startup_trials": sweep.pruner_startup_trials,
            "sampler_startup_trials": sweep.sampler_startup_trials,
            "sqlite_timeout": sweep.sqlite_timeout,
            "fit_best": sweep.fit_best,
            "log_trials": sweep.log_trials,
            "max_degenerate_share": sweep.max_degenerate_share,
        }
        values.update(overrides)
        return cls(**values)


DEGENERATE_EPS = 1e-6


def degenerate_share(proba: np.ndarray) -> float:
    """Share of probabilities within 1e-6 of 0 or 1."""
    proba = np.asarray(proba, dtype=float)
    return float(np.mean((proba <= DEGENERATE_EPS) | (proba >= 1.0 - DEGENERATE_EPS))) if proba.size else 0.0


def fixed_candidates(zoo: Mapping[str, ClassifierSpec]) -> bool:
    """True when no candidate has hyperparameters to sample: the search is one trial per candidate."""
    return all(not spec.space for spec in zoo.values())


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial of this process, as a tracker records it."""

    target: str
    study_name: str
    number: int
    classifier: str
    params: dict[str, Any]
    fold_aucs: list[float]  # the folds scored before it completed, was pruned or failed
    state: str  # COMPLETE, PRUNED or FAIL
    seconds: float


TrialLogger = Callable[[TrialRecord], None]


@dataclass
class CVFold:
    """One CV fold with the pre-classifier steps fitted on its training part only."""

    train_index: np.ndarray
    valid_index: np.ndarray
    X_train: Any
    X_valid: Any
    y_train: np.ndarray
    y_valid: np.ndarray
    repeat: int


@dataclass
class SearchResult:
    """The outcome of one target's search: the best pipeline (if fitted) and its out-of-fold scores."""

    target: str
    study_name: str
    best_classifier: str
    best_params: dict[str, Any]
    cv_auc: float
    n_trials_total: int
    n_trials_added: int
    trials: pd.DataFrame
    pipeline: Pipeline | None = None
    oof_proba: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the stages' summary JSON says of a search."""
        return {
            "study": self.study_name,
            "cv_auc": self.cv_auc,
            "best_classifier": self.best_classifier,
            "best_params": self.best_params,
            "n_trials_total": self.n_trials_total,
            "n_trials_added": self.n_trials_added,
        }


def cv_splits(y: np.ndarray, n_folds: int, n_repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Stratified (repeated) k-fold splits as ``(train, valid, repeat)``; folds capped by the minority class."""
    y = np.asarray(y)
    n_minority = int(min(np.sum(y == 1), np.sum(y == 0)))
    if n_minority < 2:
        raise ValueError(f"need at least 2 patients of each outcome for cross-validation, got {n_minority}")
    n_splits = max(2, min(int(n_folds), n_minority))
    if n_splits < n_folds:
        log.warning("only %d patients in the minority class: %d CV folds instead of %d", n_minority, n_splits, n_folds)
    if n_repeats <= 1:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:
        splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    placeholder = np.zeros(len(y))
    return [(tr, va, i // n_splits) for i, (tr, va) in enumerate(splitter.split(placeholder, y))]


def fit_selection_folds(steps: Steps, X: pd.DataFrame, y: np.ndarray, splits) -> list[CVFold]:
    """Fit clones of the pre-classifier steps on each fold's training part; transform both parts."""
    folds = []
    for train, valid, repeat in splits:
        X_tr, X_va = X.iloc[train], X.iloc[valid]
        if steps:
            selection = Pipeline([(name, clone(step)) for name, step in steps])
            Z_tr = selection.fit_transform(X_tr, y[train])
            Z_va = selection.transform(X_va)
        else:
            Z_tr, Z_va = X_tr.to_numpy(dtype=np.float64), X_va.to_numpy(dtype=np.float64)
        folds.append(CVFold(train, valid, Z_tr, Z_va, y[train], y[valid], repeat))
    return folds


def fold_probabilities(estimator: BaseEstimator, folds: Sequence[CVFold], n_samples: int) -> np.ndarray:
    """Out-of-fold P(y=1) from clones of ``estimator`` fitted per fold (averaged over repeats)."""
    total = np.zeros(n_samples)
    count = np.zeros(n_samples)
    for fold in folds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = clone(estimator).fit(fold.X_train, fold.y_train)
        total[fold.valid_index] += positive_proba(model, fold.X_valid)
        count[fold.valid_index] += 1
    if np.any(count == 0):
        raise RuntimeError("some patients were never in a validation fold")
    return total / count


def make_storage(url: str | None, sqlite_timeout: float = 120.0) -> optuna.storages.BaseStorage | None:
    """RDB storage for ``url`` (None: in memory). SQLite writers wait ``sqlite_timeout`` s for a lock.

    SQLite runs in WAL mode with ``synchronous=NORMAL``: readers no longer block the other process's
    writer, and a commit no longer waits for an fsync (about 6x faster per trial here); a crash can
    lose the last trials but never corrupts the study.
    """
    if url is None:
        return None
    url = str(url)
    engine_kwargs: dict[str, Any] = {}
    sqlite_path = None
    if url.startswith("sqlite:///"):
        sqlite_path = Path(url.removeprefix("sqlite:///"))
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": float(sqlite_timeout)}
        with contextlib.closing(sqlite3.connect(sqlite_path, timeout=float(sqlite_timeout))) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    if sqlite_path is not None:
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
        storage.engine.dispose()  # connections opened while creating the schema lack the pragma
    return storage


def _sqlite_synchronous_normal(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def open_study(
    study_name: str,
    storage: str | None,
    *,
    seed: int,
    sampler_startup_trials: int = 10,
    pruner: str | None = "median",
    pruner_startup_trials: int = 10,
    n_folds: int = 10,
    sqlite_timeout: float = 120.0,
) -> optuna.Study:
    """Create or load (``load_if_exists``) a maximising study; retries when another process is
    creating the same storage or study at the same moment."""
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(sampler_startup_trials))
    if pruner in (None, "none", "null"):
        pruner_obj: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    elif pruner == "median":
        # Warm-up of half the folds: early folds of one split are too noisy to prune on.
        pruner_obj = optuna.pruners.MedianPruner(n_startup_trials=int(pruner_startup_trials), n_warmup_steps=max(1, n_folds // 2))
    else:
        raise ValueError(f"sweep.pruner must be 'median' or null, got {pruner!r}")
    last_error: Exception | None = None
    for attempt in range(8):
        try:
            return optuna.create_study(
                study_name=study_name,
                storage=make_storage(storage, sqlite_timeout),
                sampler=sampler,
                pruner=pruner_obj,
                direction="maximize",
                load_if_exists=True,
            )
        except Exception as error:  # noqa: BLE001 - concurrent schema/study creation races
            last_error = error
            log.debug("opening study %s failed (%s); retrying", study_name, error)
            time.sleep(0.5 * (attempt + 1))
    raise RuntimeError(f"could not open Optuna study {study_name!r} in {storage}: {last_error}") from last_error


class _Named:
    """Stands in for a value in a repr: prints as the given text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def step_settings(step: BaseEstimator) -> str:
    """A step's parameters as text that is the same in every process.

    ``repr`` of a function (``FunctionTransformer(func=...)``) or of an estimator holding one carries a
    memory address, which differs from process to process: a fingerprint built on it gave every run of
    the clinical and combined searches a fresh study. Such values are named instead: functions by
    module and qualified name, estimators by class (their own parameters are listed anyway, under
    ``<name>__<param>``). Values without an address keep their repr, so the fingerprints of steps
    that never had one (the signatures' selection) are unchanged.
    """

    def named(value: Any) -> Any:
        if " at 0x" not in repr(value):
            return value
        if isinstance(value, BaseEstimator):
            return _Named(type(value).__qualname__)
        if callable(value) and hasattr(value, "__qualname__"):
            return _Named(f"{getattr(value, '__module__', '?')}.{value.__qualname__}")
        if isinstance(value, (list, tuple)):
            return type(value)(named(v) for v in value)
        return _Named(type(value).__qualname__)  # e.g. a RandomState: its type is what is stable

    return repr(sorted(((key, named(value)) for key, value in step.get_params(deep=True).items()), key=lambda kv: kv[0]))


def study_fingerprint(
    target: str, X: pd.DataFrame, y: np.ndarray, steps: Steps, zoo: Mapping[str, ClassifierSpec], settings: SearchSettings
) -> str:
    """Hash of what a trial's score depends on: data, steps, candidates, folds and seed.

    Processes with the same fingerprint share a study; anything else gets a fresh one, so a study
    never mixes trials scored on different data.
    """
    content = (
        target,
        list(map(str, X.columns)),
        list(map(str, X.index)),
        pd.util.hash_pandas_object(X, index=False).to_numpy(),
        np.asarray(y),
        [(name, type(step).__name__, step_settings(step)) for name, step in steps],
        [(spec.name, spec.estimator, spec.space) for spec in zoo.values()],
        settings.cv_folds,
        settings.cv_repeats,
        settings.seed,
    )
    return joblib.hash(content)[:10]


def search_classifier(
    target: str,
    X: pd.DataFrame,
    y: np.ndarray,
    steps: Steps,
    zoo: Mapping[str, ClassifierSpec],
    settings: SearchSettings,
    final_params: Mapping[str, Any] | None = None,
    on_trial: TrialLogger | None = None,
) -> SearchResult:
    """Search the zoo for ``target`` on (X, y); optionally fit the best pipeline on all of (X, y).

    Trials this process adds are appended to the shared study; the best trial is chosen among all
    completed trials in storage (every process's). ``final_params`` are set on the final pipeline
    only (e.g. ``{"lasso__store_path": True}`` for the LASSO figure). ``on_trial`` receives each trial this
    process runs when ``settings.log_trials`` is set (the stages pass MLflow's nested-run logger).
    """
    y = np.asarray(y).astype(int)
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"{target}: the outcome must be 0/1, got values {sorted(np.unique(y))}")
    if not zoo:
        raise ValueError(f"{target}: no classifier to search")
    splits = cv_splits(y, settings.cv_folds, settings.cv_repeats, settings.seed)
    started = time.perf_counter()
    folds = fit_selection_folds(steps, X, y, splits)
    log.info("%s: selection fitted on %d CV folds in %.1f s", target, len(folds), time.perf_counter() - started)

    study = _open_target_study(target, X, y, steps, zoo, settings, n_folds=len(folds))
    objective = _Objective(target, study.study_name, zoo, folds, settings, on_trial)
    _add_trials(study, objective, zoo, settings, target)
    trials = study.trials
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        errors = sorted({str(t.user_attrs.get("error")) for t in trials if t.user_attrs.get("error")})
        raise RuntimeError(f"{target}: study {study.study_name!r} has no completed trial; errors: {errors[:3]}")
    best = study.best_trial
    clf_name, params = params_of_trial(best.params)
    result = SearchResult(
        target=target,
        study_name=study.study_name,
        best_classifier=clf_name,
        best_params=params,
        cv_auc=float(best.value),
        n_trials_total=len(trials),
        n_trials_added=objective.n_calls,
        trials=_trials_frame(study),
    )
    log.info(
        "%s: best of %d trials (%d added here) is %s, CV AUC %.3f",
        target,
        result.n_trials_total,
        result.n_trials_added,
        clf_name,
        result.cv_auc,
    )
    if settings.fit_best:
        classifier = zoo[clf_name].build(params, seed=settings.seed)
        result.oof_proba = fold_probabilities(classifier, folds, len(y))
        pipeline = Pipeline([*((name, clone(step)) for name, step in steps), ("classifier", classifier)])
        if final_params:
            pipeline.set_params(**final_params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result.pipeline = pipeline.fit(X, y)
    return result


def _open_target_study(
    target: str,
    X: pd.DataFrame,
    y: np.ndarray,
    steps: Steps,
    zoo: Mapping[str, ClassifierSpec],
    settings: SearchSettings,
    n_folds: int,
) -> optuna.Study:
    """The shared study of ``target`` on this data and set-up (named by its fingerprint)."""
    fingerprint = study_fingerprint(target, X, y, steps, zoo, settings)
    study_name = f"{settings.study_name}-{target}-{fingerprint}"
    sampler_seed = settings.seed + 1009 * settings.worker + zlib.crc32(target.encode()) % 1000
    study = open_study(
        study_name,
        settings.storage,
        seed=sampler_seed,
        sampler_startup_trials=settings.sampler_startup_trials,
        pruner=settings.pruner,
        pruner_startup_trials=settings.pruner_startup_trials,
        n_folds=n_folds,
        sqlite_timeout=settings.sqlite_timeout,
    )
    study.set_user_attr("target", target)
    study.set_user_attr("n_patients", int(len(y)))
    study.set_user_attr("n_features_in", int(X.shape[1]))
    return study


def _add_trials(
    study: optuna.Study, objective: _Objective, zoo: Mapping[str, ClassifierSpec], settings: SearchSettings, target: str
) -> None:
    """Run this process's share of the study's trial budget."""
    # n_trials is the study's budget, shared by every process on it: each stops once the study holds
    # that many finished trials, and a rerun on the same data adds none (same best trial, same outputs).
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = None if settings.n_trials is None else max(0, int(settings.n_trials) - finished)
    if fixed_candidates(zoo):
        # Nothing to sample: each candidate once is the whole search (a second trial would repeat one).
        tried = {t.params.get(CLASSIFIER_PARAM) for t in study.get_trials(deepcopy=False, states=FINISHED)}
        untried = [name for name in zoo if name not in tried]
        for name in untried:
            study.enqueue_trial({CLASSIFIER_PARAM: name})
        remaining = len(untried) if remaining is None else min(remaining, len(untried))
    if remaining is None or remaining > 0:
        callbacks = [] if settings.n_trials is None else [MaxTrialsCallback(int(settings.n_trials), states=FINISHED)]
        study.optimize(objective, n_trials=remaining, timeout=settings.timeout, callbacks=callbacks, catch=(Exception,))
    else:
        log.info("%s: study %s already has %d finished trials; none added", target, study.study_name, finished)


class _Objective:
    """Mean fold AUC of one sampled classifier on the pre-fitted folds; each trial goes to ``on_trial``."""

    def __init__(
        self,
        target: str,
        study_name: str,
        zoo,
        folds: Sequence[CVFold],
        settings: SearchSettings,
        on_trial: TrialLogger | None = None,
    ):
        self.target = target
        self.study_name = study_name
        self.zoo = zoo
        self.folds = folds
        self.settings = settings
        self.on_trial = on_trial
        self.n_calls = 0  # trials run by this process (others may share the study)

    def __call__(self, trial: optuna.Trial) -> float:
        self.n_calls += 1
        name, params = suggest_classifier(trial, self.zoo)
        trial.set_user_attr("worker", self.settings.worker)
        started = time.perf_counter()
        aucs: list[float] = []
        probas: list[np.ndarray] = []
        state = "COMPLETE"
        try:
            estimator = self.zoo[name].build(params, seed=self.settings.seed)
            for step, fold in enumerate(self.folds):
                with warnings.catch_warnings():
                    # A sampled setting that does not converge is judged by its AUC, not by a warning flood.
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model = clone(estimator).fit(fold.X_train, fold.y_train)
                proba = positive_proba(model, fold.X_valid)
                probas.append(proba)
                aucs.append(float(roc_auc_score(fold.y_valid, proba)))
                if self.settings.pruner not in (None, "none", "null"):  # each report is a storage write
                    trial.report(float(np.mean(aucs)), step)
                    if trial.should_prune():
                        state = "PRUNED"
                        raise optuna.TrialPruned()
            if not np.all(np.isfinite(aucs)):
                raise ValueError("non-finite fold AUC")
            limit = self.settings.max_degenerate_share
            if limit is not None and degenerate_share(np.concatenate(probas)) > limit:
                raise ValueError(
                    f"degenerate probabilities: {degenerate_share(np.concatenate(probas)):.0%} of validation "
                    f"probabilities within {DEGENERATE_EPS:g} of 0 or 1 (sweep.max_degenerate_share={limit})"
                )
            return float(np.mean(aucs))
        except optuna.TrialPruned:
            raise
        except Exception as error:
            state = "FAIL"
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
            log.debug("%s trial %d (%s) failed: %s", self.target, trial.number, name, error)
            raise
        finally:
            seconds = time.perf_counter() - started
            if self.settings.log_trials and self.on_trial is not None:
                record = TrialRecord(self.target, self.study_name, trial.number, name, dict(params), list(aucs), state, seconds)
                try:
                    self.on_trial(record)
                except Exception as error:  # noqa: BLE001 - tracking must not stop a search
                    log.warning("could not log trial %d of %s: %s", trial.number, self.target, error)


def _trials_frame(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.trials:
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "cv_auc": t.value,
                "classifier": t.params.get(CLASSIFIER_PARAM),
                "params": {k: v for k, v in t.params.items() if k != CLASSIFIER_PARAM},
                "seconds": t.duration.total_seconds() if t.duration is not None else None,
                "error": t.user_attrs.get("error"),
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["params"] = frame["params"].astype(str)
    return frame
