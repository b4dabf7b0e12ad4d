"""Column names of the deep stage's cross-fitted table (a light module: no torch, no Lightning).

``deep.parquet`` is long: one row per (patient, fold model) with ``fold_model`` (j) and ``label_seen``
(fold model j was trained on the patient's label); the models read it wide, fold model j's feature
``{sequence}_{roi}_dl_{k}`` in the column ``{sequence}_{roi}_dl_{k}_f{j}`` (``fold_column``).
"""

from __future__ import annotations

__all__ = ["FOLD_COLUMN", "SEEN_COLUMN", "fold_column"]

FOLD_COLUMN = "fold_model"
SEEN_COLUMN = "label_seen"


def fold_column(base: str, fold: int) -> str:
    """The wide-table name of fold model ``fold``'s feature ``base`` (``ct_vertebra_dl_3`` -> ``ct_vertebra_dl_3_f2``)."""
    return f"{base}_f{int(fold)}"
