"""Fitted scikit-learn pipelines evaluated from their fitted arrays, without scikit-learn's input checks.

For one patient, ``Pipeline.predict_proba`` of the combined model (a ``ColumnTransformer`` of four
branches, then a scaler and a logistic regression on six numbers) spends ~10 ms in scikit-learn's
validation of pandas frames and arrays: dtype inspection per column, feature-name checks, finite
checks, copies, one call per step. The arithmetic itself takes microseconds. Here the fitted steps of
kinds this module knows are turned into plain numpy functions of their fitted attributes, doing the
operations scikit-learn 1.9's ``transform`` / ``predict_proba`` do, in the same order (the results
are tested equal to scikit-learn's to 1e-12 in ``tests/models/test_models_compiled.py``):

- ``Pipeline`` (nested; ``"passthrough"`` steps), ``ColumnTransformer`` (columns named, dense
  output; a ``"drop"`` remainder);
- ``SimpleImputer`` (NaN as the missing marker, numeric statistics, no indicator),
  ``StandardScaler``, ``PCA``, cagerisk's ``ZScorePCA`` (a scaler then a PCA);
- ``FunctionTransformer`` of the identity, :func:`cagerisk.models.clinical.logit_clipped` and
  :func:`cagerisk.models.clinical._as_text` (recognised by name: importing them costs scipy.stats);
- ``OneHotEncoder`` (dense, no infrequent categories; unknown categories as zeros when it ignores them);
- a binary ``LogisticRegression`` / ``LogisticRegressionCV`` as the final step, or cagerisk's
  ``LinearTreeStack`` (its members and stacker from their fitted arrays, its trees by
  :mod:`cagerisk.models.forest`).

Any other estimator is *opaque*: allowed after a known step inside a pipeline (it then gets the same
array scikit-learn would hand it, and its own methods run), never where it would receive the caller's
table. :func:`compile_pipeline` returns None for a pipeline with a step it cannot place; the compiled
form returns None for an input it does not handle exactly as scikit-learn would (a missing or
non-text category, an infinite value, an unknown category the encoder refuses, a column it lacks):
the caller then uses scikit-learn, which computes or raises as before.

Light: numpy and scipy.special only (scikit-learn's classes are looked up, never fitted); no
Optuna, MLflow or stage code, so that served models can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

Array = np.ndarray
# A known FunctionTransformer function, by module and name (importing models.clinical costs scipy.stats).
LOGIT_CLIPPED = ("cagerisk.models.clinical", "logit_clipped")
AS_TEXT = ("cagerisk.models.clinical", "_as_text")
LOGIT_CLIP = 1e-4  # logit_clipped's bound (tested against the function itself)
LOGISTIC = ("sklearn.linear_model._logistic.LogisticRegression", "sklearn.linear_model._logistic.LogisticRegressionCV")


class Unsupported(Exception):
    """An input (or, at compile time, a step) this module does not evaluate exactly as scikit-learn does."""


class _Op:
    """One fitted step as a function of a 2-D array. ``text`` ops take object arrays of strings."""

    text = False

    def __call__(self, X: Array) -> Array:  # pragma: no cover - every op overrides it
        raise NotImplementedError


class _Chain(_Op):
    def __init__(self, ops: Sequence[_Op]) -> None:
        self.ops = list(ops)
        self.text = bool(self.ops) and self.ops[0].text

    def __call__(self, X: Array) -> Array:
        for op in self.ops:
            X = op(X)
        return X


class _Imputer(_Op):
    """``SimpleImputer.transform``: columns without a statistic dropped, NaN replaced by the statistic."""

    def __init__(self, est: Any) -> None:
        missing = est.missing_values
        if not (isinstance(missing, float) and np.isnan(missing)) or est.add_indicator:
            raise Unsupported("SimpleImputer: only NaN as the missing marker, no indicator")
        fit_dtype = getattr(est, "_fit_dtype", np.dtype(np.float64))
        statistics = np.asarray(est.statistics_)
        # strategy="constant" keeps its statistics as objects; numbers only here
        numeric = statistics.dtype.kind in "fiu" or (
            statistics.dtype == object and all(isinstance(v, (int, float, np.integer, np.floating)) for v in statistics)
        )
        if fit_dtype.kind not in "fiu" or not numeric or any(isinstance(v, (bool, np.bool_)) for v in statistics):
            raise Unsupported("SimpleImputer fitted on non-numeric data")
        fill_dtype = getattr(est, "_fill_dtype", fit_dtype)
        statistics = statistics.astype(np.float64)
        if est.keep_empty_features:
            self.keep = None
            valid = statistics
        else:
            valid_mask = ~np.isnan(statistics)
            self.keep = None if valid_mask.all() else np.flatnonzero(valid_mask)
            valid = statistics[valid_mask]
        # scikit-learn casts the statistics to the dtype seen in fit (an integer column's mode stays an integer)
        self.values = valid.astype(fill_dtype, copy=False).astype(np.float64)
        self.n_features = len(statistics)

    def __call__(self, X: Array) -> Array:
        if X.dtype.kind != "f" or X.shape[1] != self.n_features or np.isinf(X).any():
            raise Unsupported("imputer input")
        X = X.astype(np.float64, copy=True)
        if self.keep is not None:
            X = X[:, self.keep]
        missing = np.isnan(X)
        if missing.any():
            X[missing] = np.broadcast_to(self.values, X.shape)[missing]
        return X


class _Scaler(_Op):
    def __init__(self, est: Any) -> None:
        self.mean = np.asarray(est.mean_, dtype=np.float64) if est.with_mean else None
        self.scale = np.asarray(est.scale_, dtype=np.float64) if est.with_std else None
        self.n_features = int(est.n_features_in_)

    def __call__(self, X: Array) -> Array:
        if X.dtype != np.float64 or X.shape[1] != self.n_features or np.isinf(X).any():
            raise Unsupported("scaler input")
        X = X.copy()
        if self.mean is not None:
            X -= self.mean
        if self.scale is not None:
            X /= self.scale
        return X


class _PCA(_Op):
    """``PCA._transform`` of a dense array (projection, then the projected mean, then whitening)."""

    def __init__(self, est: Any) -> None:
        self.components_T = np.asarray(est.components_, dtype=np.float64).T
        self.mean_projected = np.reshape(np.asarray(est.mean_, dtype=np.float64), (1, -1)) @ self.components_T
        self.scale = None
        if est.whiten:
            scale = np.sqrt(np.asarray(est.explained_variance_, dtype=np.float64))
            scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
            self.scale = scale
        self.n_features = self.components_T.shape[0]

    def __call__(self, X: Array) -> Array:
        if X.dtype != np.float64 or X.shape[1] != self.n_features or not np.isfinite(X).all():
            raise Unsupported("PCA input")
        out = X @ self.components_T
        out -= self.mean_projected
        if self.scale is not None:
            out /= self.scale
        return out


class _LogitClipped(_Op):
    def __call__(self, X: Array) -> Array:
        if X.dtype.kind not in "fiu":
            raise Unsupported("logit of non-numbers")
        p = np.clip(np.asarray(X, dtype=np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
        return np.log(p / (1 - p))


class _Identity(_Op):
    def __call__(self, X: Array) -> Array:
        return X


class _AsText(_Op):
    """``_as_text``: every value as its text. Only text values are taken; a missing value (which pandas
    turns into NaN or "nan" depending on its version) goes to scikit-learn."""

    text = True

    def __call__(self, X: Array) -> Array:
        if X.dtype != object or not all(type(v) is str for v in X.ravel()):
            raise Unsupported("non-text category")
        return X


class _OneHot(_Op):
    """``OneHotEncoder.transform`` (dense): one column per category but the dropped one."""

    text = True

    def __init__(self, est: Any) -> None:
        if est.sparse_output or getattr(est, "_infrequent_enabled", False) or np.dtype(est.dtype) != np.float64:
            raise Unsupported("OneHotEncoder: dense float64 output without infrequent categories only")
        if est.handle_unknown not in ("ignore", "infrequent_if_exist", "warn", "error"):
            raise Unsupported(f"OneHotEncoder: handle_unknown={est.handle_unknown!r}")
        self.ignore_unknown = est.handle_unknown != "error"
        drop = getattr(est, "drop_idx_", None)
        self.lookups: list[dict[str, int]] = []
        self.widths: list[int] = []
        for j, categories in enumerate(est.categories_):
            if not all(type(c) is str for c in categories):
                raise Unsupported("OneHotEncoder: non-text categories")
            dropped = None if drop is None or drop[j] is None else int(drop[j])
            columns = [c for i, c in enumerate(categories) if i != dropped]
            lookup = {c: i for i, c in enumerate(columns)}
            if dropped is not None:
                lookup[str(categories[dropped])] = -1  # the dropped (reference) category: all zeros
            self.lookups.append(lookup)
            self.widths.append(len(columns))

    def __call__(self, X: Array) -> Array:
        if X.dtype != object or X.shape[1] != len(self.lookups):
            raise Unsupported("one-hot input")
        out = np.zeros((X.shape[0], sum(self.widths)), dtype=np.float64)
        start = 0
        for j, (lookup, width) in enumerate(zip(self.lookups, self.widths, strict=True)):
            for i, value in enumerate(X[:, j]):
                if type(value) is not str:
                    raise Unsupported("non-text category")
                k = lookup.get(value)
                if k is None:
                    if not self.ignore_unknown:
                        raise Unsupported("unknown category")  # scikit-learn raises its error
                    continue
                if k >= 0:
                    out[i, start + k] = 1.0
            start += width
        return out


class _Opaque(_Op):
    """A step this module does not know, fed the array scikit-learn would feed it."""

    def __init__(self, est: Any) -> None:
        if not hasattr(est, "transform"):
            raise Unsupported(f"{type(est).__name__} is not a transformer")
        self.est = est

    def __call__(self, X: Array) -> Array:
        return np.asarray(self.est.transform(X))


class _Columns(_Op):
    """``ColumnTransformer.transform`` of named columns: each branch on its columns, outputs side by side."""

    def __init__(self, est: Any) -> None:
        if getattr(est, "sparse_output_", False):
            raise Unsupported("ColumnTransformer with sparse output")
        self.branches: list[tuple[list[str], _Op]] = []
        for name, transformer, columns in est.transformers_:
            if isinstance(transformer, str) and transformer == "drop":
                continue
            names = list(columns) if not isinstance(columns, str) else [columns]
            if not names:  # scikit-learn skips a branch without columns
                continue
            if not all(isinstance(c, str) for c in names):
                raise Unsupported(f"ColumnTransformer branch {name!r}: columns not named")
            if isinstance(transformer, str):
                raise Unsupported(f"ColumnTransformer branch {name!r}: {transformer!r}")
            self.branches.append((names, _compile_step(transformer, first=True)))
        if not self.branches:
            raise Unsupported("ColumnTransformer without branches")

    def of_columns(self, columns: Mapping[str, Any], n: int) -> Array:
        blocks = []
        for names, op in self.branches:
            values = [np.asarray(columns[c]) for c in names]  # KeyError: the caller goes to scikit-learn
            if any(v.shape != (n,) for v in values):
                raise Unsupported("column of another length")
            if op.text:
                block = np.empty((n, len(values)), dtype=object)
                for j, v in enumerate(values):
                    block[:, j] = v
            else:
                if not all(v.dtype.kind in "fiu" for v in values):
                    raise Unsupported("non-numeric column in a numeric branch")
                block = np.column_stack(values).astype(np.float64, copy=False)
            blocks.append(np.asarray(op(block), dtype=np.float64))
        return np.hstack(blocks)


class _BinaryLogistic:
    """``LogisticRegression.predict_proba`` of a binary model: expit of the decision, [1 - p, p]."""

    def __init__(self, est: Any) -> None:
        if _kind(est) not in LOGISTIC:
            raise Unsupported(f"{_kind(est)} is not a logistic regression")
        coef = np.asarray(est.coef_, dtype=np.float64)
        if len(est.classes_) != 2 or coef.shape[0] != 1:
            raise Unsupported("LogisticRegression: binary only")
        self.coef_T = coef.T
        self.intercept = np.asarray(est.intercept_, dtype=np.float64)
        self.n_features = coef.shape[1]

    def decision(self, X: Array) -> Array:
        """``decision_function``: ``X @ coef_.T + intercept_``, one value per row."""
        if X.dtype != np.float64 or X.shape[1] != self.n_features or not np.isfinite(X).all():
            raise Unsupported("logistic regression input")
        return np.reshape(X @ self.coef_T + self.intercept, (-1,))

    def __call__(self, X: Array) -> Array:
        p = expit(self.decision(X))
        return np.stack([1 - p, p], axis=1)


class _Stack:
    """``LinearTreeStack.predict_proba`` (cagerisk.models.ensemble) without its three input checks:
    clip to the training range, the linear member on standardised values, the trees' logit (the
    compiled forest), the stack's own standardisation and combination, then its logistic stacker."""

    def __init__(self, est: Any) -> None:
        if len(est.classes_) != 2 or _kind(est.scaler_) != "sklearn.preprocessing._data.StandardScaler":
            raise Unsupported("LinearTreeStack: binary, with a StandardScaler")
        self.est = est
        self.low = np.asarray(est.feature_min_, dtype=np.float64)
        self.high = np.asarray(est.feature_max_, dtype=np.float64)
        self.scaler = _Scaler(est.scaler_)
        self.stacker = _BinaryLogistic(est.stacker_)
        self.n_features = int(est.n_features_in_)

    def __call__(self, X: Array) -> Array:
        if X.dtype != np.float64 or X.shape[1] != self.n_features or not np.isfinite(X).all():
            raise Unsupported("stack input")
        # The stack's own member scores and combination (the members it kept), the compiled scaler.
        Z = self.est._stacker_input(np.clip(X, self.low, self.high), self.scaler)
        p = 1.0 / (1.0 + np.exp(-self.stacker.decision(Z)))
        return np.column_stack([1.0 - p, p])


class _OpaqueClassifier:
    def __init__(self, est: Any) -> None:
        if not hasattr(est, "predict_proba"):
            raise Unsupported(f"{type(est).__name__} has no predict_proba")
        self.est = est

    def __call__(self, X: Array) -> Array:
        return np.asarray(self.est.predict_proba(X))


def _kind(est: Any) -> str:
    return f"{type(est).__module__}.{type(est).__qualname__}"


def _function_op(est: Any) -> _Op:
    if est.kw_args or getattr(est, "validate", False):
        raise Unsupported("FunctionTransformer with arguments or validation")
    func = est.func
    if func is None:
        return _Identity()
    key = (getattr(func, "__module__", None), getattr(func, "__qualname__", None))
    if key == LOGIT_CLIPPED:
        return _LogitClipped()
    if key == AS_TEXT:
        return _AsText()
    raise Unsupported(f"FunctionTransformer of {key}")


def _compile_step(est: Any, first: bool) -> _Op:
    """A transformer step as an op. ``first``: it receives the caller's columns (no opaque step there)."""
    kind = _kind(est)
    if getattr(est, "_sklearn_output_config", {}).get("transform", "default") != "default":
        raise Unsupported(f"{kind}: set_output")
    if kind == "sklearn.pipeline.Pipeline":
        ops: list[_Op] = []
        for _, step in est.steps:
            if step is None or (isinstance(step, str) and step == "passthrough"):
                continue
            ops.append(_compile_step(step, first=first and not ops))
        return _Chain(ops)
    if kind == "sklearn.impute._base.SimpleImputer":
        return _Imputer(est)
    if kind == "sklearn.preprocessing._data.StandardScaler":
        return _Scaler(est)
    if kind == "sklearn.decomposition._pca.PCA":
        return _PCA(est)
    if kind == "cagerisk.features.deep.ZScorePCA":
        return _Chain([_Scaler(est.scaler_), _PCA(est.pca_)])
    if kind == "sklearn.preprocessing._function_transformer.FunctionTransformer":
        return _function_op(est)
    if kind == "sklearn.preprocessing._encoders.OneHotEncoder":
        return _OneHot(est)
    if kind == "sklearn.compose._column_transformer.ColumnTransformer":
        raise Unsupported("ColumnTransformer inside a pipeline step (only as the first step)")
    if first:
        raise Unsupported(f"{kind} would receive the caller's table")
    return _Opaque(est)


class CompiledPipeline:
    """A fitted classifier pipeline as numpy functions; see the module docstring.

    ``predict_proba(X)`` takes what the pipeline was fitted on: a table (a DataFrame or a mapping of
    column name -> 1-D array) when it starts with a ``ColumnTransformer`` or has ``feature_names_in_``,
    else a 2-D array. It returns None where scikit-learn has to decide.
    """

    def __init__(self, pipeline: Any) -> None:
        steps = [s for _, s in pipeline.steps] if _kind(pipeline) == "sklearn.pipeline.Pipeline" else [pipeline]
        steps = [s for s in steps if not (s is None or (isinstance(s, str) and s == "passthrough"))]
        *transforms, final = _flatten_final(steps)
        self.classes = list(final.classes_)
        self.columns: _Columns | None = None
        if transforms and _kind(transforms[0]) == "sklearn.compose._column_transformer.ColumnTransformer":
            self.columns = _Columns(transforms[0])
            transforms = transforms[1:]
        names = getattr(pipeline, "feature_names_in_", None)
        # Named columns for a table; a 2-D array is taken by position, as scikit-learn takes it.
        self.feature_names = [str(c) for c in names] if names is not None and self.columns is None else None
        ops = [_compile_step(t, first=self.columns is None and i == 0) for i, t in enumerate(transforms)]
        self.chain = _Chain(ops)
        kind = _kind(final)
        if kind in LOGISTIC:
            self.final: Callable[[Array], Array] = _BinaryLogistic(final)
        elif kind == "cagerisk.models.ensemble.LinearTreeStack" and (self.columns is not None or ops):
            self.final = _Stack(final)
        elif self.columns is None and not ops:
            raise Unsupported(f"{kind} would receive the caller's table")
        elif hasattr(final, "feature_names_in_"):
            raise Unsupported(f"{kind} was fitted on named columns")
        else:
            self.final = _OpaqueClassifier(final)

    def predict_proba(self, X: Any) -> Array | None:
        try:
            return self._predict_proba(X)
        except (Unsupported, KeyError):
            return None

    def _predict_proba(self, X: Any) -> Array:
        if self.columns is not None:
            columns = _as_columns(X)
            n = _length(columns)
            Z = self.columns.of_columns(columns, n)
        elif isinstance(X, np.ndarray):
            if X.ndim != 2 or X.dtype.kind not in "fiu":
                raise Unsupported("expected a 2-D numeric array")
            Z = X.astype(np.float64, copy=False)
        elif self.feature_names is not None:
            columns = _as_columns(X)
            values = [np.asarray(columns[c]) for c in self.feature_names]
            if not all(v.dtype.kind in "fiu" and v.ndim == 1 for v in values):
                raise Unsupported("non-numeric column")
            Z = np.column_stack(values).astype(np.float64, copy=False)
        else:
            raise Unsupported("a table for a pipeline fitted on an array")
        return self.final(self.chain(Z))

    def positive_proba(self, X: Any) -> Array | None:
        """P(class 1), or None where scikit-learn has to decide."""
        proba = self.predict_proba(X)
        return None if proba is None else proba[:, self.classes.index(1)]


def _flatten_final(steps: list[Any]) -> list[Any]:
    """A pipeline whose last step is a pipeline (the zoo's scaler + classifier): its steps inline."""
    last = steps[-1]
    if _kind(last) == "sklearn.pipeline.Pipeline":
        inner = [s for _, s in last.steps if not (s is None or (isinstance(s, str) and s == "passthrough"))]
        return [*steps[:-1], *_flatten_final(inner)]
    return steps


def _as_columns(X: Any) -> Mapping[str, Any]:
    if isinstance(X, Mapping):
        return X
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a DataFrame, without importing pandas
        return _FrameColumns(X)
    raise Unsupported("expected a table (DataFrame or mapping of columns)")


class _FrameColumns(Mapping):
    def __init__(self, frame: Any) -> None:
        self.frame = frame
        if frame.columns.duplicated().any():
            raise Unsupported("duplicated columns")

    def __getitem__(self, name: str) -> Array:
        return self.frame[name].to_numpy()

    def __iter__(self):
        return iter(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame.columns)


def _length(columns: Mapping[str, Any]) -> int:
    if isinstance(columns, _FrameColumns):
        return len(columns.frame)
    lengths = {len(np.asarray(v)) for v in columns.values()}
    if len(lengths) != 1:
        raise Unsupported("columns of different lengths")
    return lengths.pop()


class CompiledCrossFit:
    """A cross-fitted signature (:class:`cagerisk.models.crossfit.CrossFittedSignature`: K fold pipelines,
    P(CS) = the mean of theirs) with every fold pipeline compiled. It takes a 2-D array whose columns are
    the folds' columns one after the other (the signature's ``feature_names_in_``), as that class does."""

    def __init__(self, signature: Any) -> None:
        self.classes = [0, 1]
        self.widths = [len(cols) for cols in signature.fold_columns]
        self.folds = [CompiledPipeline(p) for p in signature.pipelines]

    def predict_proba(self, X: Any) -> Array | None:
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.shape[1] != sum(self.widths) or X.dtype.kind not in "fiu":
            return None
        parts = np.split(X.astype(np.float64, copy=False), np.cumsum(self.widths)[:-1], axis=1)
        probs = [fold.positive_proba(part) for fold, part in zip(self.folds, parts, strict=True)]
        if any(p is None for p in probs):
            return None
        mean = np.column_stack(probs).mean(axis=1)
        return np.column_stack([1.0 - mean, mean])

    def positive_proba(self, X: Any) -> Array | None:
        proba = self.predict_proba(X)
        return None if proba is None else proba[:, 1]


def compile_pipeline(pipeline: Any) -> CompiledPipeline | CompiledCrossFit | None:
    """The compiled form of a fitted pipeline (or cross-fitted signature), or None when a step is of a
    kind this module cannot place. It reads the fitted attributes once: compile again after a refit."""
    try:
        if _kind(pipeline) == "cagerisk.models.crossfit.CrossFittedSignature":
            return CompiledCrossFit(pipeline)
        return CompiledPipeline(pipeline)
    except (Unsupported, AttributeError, TypeError, ValueError, IndexError):
        return None
