"""Class probabilities of a fitted scikit-learn forest, every tree at once in numpy.

``ForestClassifier.predict_proba`` walks its trees one by one from Python (joblib dispatch, input
checks and a lock per tree): for the default Rad-sign's 500 extra trees that is 20-50 ms per call
whatever the number of rows, about the whole compute of scoring one patient. Here the trees of a
fitted forest are laid out once as flat node arrays, and all (row, tree) pairs descend together,
one numpy step per tree level.

The arithmetic is scikit-learn's, so the result is bit for bit the same (tested): rows are cast to
float32 and compared with the float64 thresholds as ``Tree.apply`` does; a leaf's probabilities
are its stored class fractions (``Tree.predict``); trees are added in their order, starting from
zero, then divided by their number (``ForestClassifier.predict_proba``). Inputs this module does not
handle (sparse matrices, non-finite values, multi-output forests) go to scikit-learn unchanged.

This module is pickled into served models with the ensemble that uses it: numpy only.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np


class CompiledForest:
    """The trees of a fitted single-output forest classifier as flat arrays (see the module docstring)."""

    def __init__(self, forest: Any) -> None:
        self.estimators = forest.estimators_  # what it was compiled from: a refit replaces this list
        trees = [estimator.tree_ for estimator in forest.estimators_]
        if not trees:
            raise ValueError("the forest has no trees")
        self.n_trees = len(trees)
        self.n_features = int(forest.n_features_in_)
        self.n_classes = int(forest.n_classes_)
        sizes = np.array([t.node_count for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.roots = offsets.astype(np.intp)
        left = np.concatenate([t.children_left + o for t, o in zip(trees, offsets, strict=True)]).astype(np.intp)
        right = np.concatenate([t.children_right + o for t, o in zip(trees, offsets, strict=True)]).astype(np.intp)
        leaf = np.concatenate([t.children_left for t in trees]) == -1  # sklearn's _TREE_LEAF
        nodes = np.arange(len(leaf), dtype=np.intp)
        # A leaf points to itself both ways, so that rows that reached one stay there while the
        # deeper trees go on.
        self.left = np.where(leaf, nodes, left)
        self.right = np.where(leaf, nodes, right)
        self.feature = np.where(leaf, 0, np.concatenate([t.feature for t in trees])).astype(np.intp)
        self.threshold = np.concatenate([t.threshold for t in trees]).astype(np.float64)
        self.missing_left = np.concatenate([np.asarray(t.missing_go_to_left, dtype=bool) for t in trees])
        self.value = np.concatenate([t.value[:, 0, : self.n_classes] for t in trees]).astype(np.float64)
        self.depth = max(int(t.max_depth) for t in trees)

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """Leaf (global node index) of each row in each tree, shape ``(n_rows, n_trees)``; X as float32."""
        n = X.shape[0]
        node = np.broadcast_to(self.roots, (n, self.n_trees)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            x = X[rows, self.feature[node]]
            # float32 value against the float64 threshold, as Tree.apply; NaN follows missing_go_to_left.
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        return node

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean class fractions over the trees, shape ``(n_rows, n_classes)``; X is cast to float32 as
        scikit-learn does (check it is finite after the cast to get scikit-learn's answer)."""
        X32 = np.asarray(X, dtype=np.float32)
        if X32.ndim != 2 or X32.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X32.shape}; the forest expects {self.n_features} features")
        if X32.shape[0] == 0:
            return np.zeros((0, self.n_classes))
        values = self.value[self.leaves(X32)]  # (rows, trees, classes)
        # cumsum adds strictly in tree order, as the forest's loop does (np.sum would add pairwise).
        proba = np.cumsum(values, axis=1)[:, -1, :]
        proba /= self.n_trees
        return proba


_COMPILED: weakref.WeakKeyDictionary[Any, CompiledForest] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def compiled_forest(forest: Any) -> CompiledForest | None:
    """The compiled form of a fitted forest classifier (kept while the forest lives, redone after a
    refit), or None when it is not one this module handles (multi-output, no ``tree_`` arrays)."""
    with _LOCK:
        compiled = _COMPILED.get(forest)
        if compiled is None or compiled.estimators is not getattr(forest, "estimators_", None):
            if getattr(forest, "n_outputs_", None) != 1 or not hasattr(forest, "estimators_"):
                return None
            try:
                compiled = CompiledForest(forest)
            except (AttributeError, ValueError, TypeError):
                return None
            _COMPILED[forest] = compiled
        return compiled


def forest_predict_proba(forest: Any, X: Any) -> np.ndarray:
    """``forest.predict_proba(X)`` of a fitted forest classifier, with every tree at once when X is a
    dense numeric array, finite as float32; anything else goes to ``forest.predict_proba`` (which
    then handles it, or raises, as it always did)."""
    # A forest fitted on named columns warns about an unnamed array: left to scikit-learn.
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind in "fiu" and not hasattr(forest, "feature_names_in_"):
        compiled = compiled_forest(forest)
        if compiled is not None and X.shape[1] == compiled.n_features:
            with np.errstate(over="ignore"):  # too large for float32 is inf, refused by scikit-learn below
                X32 = X.astype(np.float32)
            if np.isfinite(X32).all():
                return compiled.predict_proba(X32)
    return forest.predict_proba(X)
