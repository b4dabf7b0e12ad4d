import numpy as np
import pandas as pd
import pytest

from cagerisk.cohort.split import assign_splits, split_counts, stratified_split


def test_paper_counts():
    assert split_counts(305, {"train": 0.7, "val": 0.2, "test": 0.1}) == {"train": 214, "val": 61, "test": 30}


def test_stratified_split_is_exact_and_proportional():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"cs": rng.random(305) < 0.25, "center": rng.choice(list("ABC"), 305, p=[0.45, 0.33, 0.22])})
    split = assign_splits(
        frame, "cs", {"train": 0.7, "val": 0.2, "test": 0.1}, seed=1, counts={"train": 214, "val": 61, "test": 30}
    )
    assert split.value_counts().to_dict() == {"train": 214, "val": 61, "test": 30}
    prevalence = frame.groupby(split)["cs"].mean()
    assert prevalence.max() - prevalence.min() < 0.03
    for center in "ABC":
        share = (frame["center"] == center).groupby(split).mean()
        assert share.max() - share.min() < 0.05
    # deterministic for a seed
    again = assign_splits(
        frame, "cs", {"train": 0.7, "val": 0.2, "test": 0.1}, seed=1, counts={"train": 214, "val": 61, "test": 30}
    )
    assert split.equals(again)


def test_sizes_must_add_up():
    with pytest.raises(ValueError, match="do not add up"):
        stratified_split(["a"] * 10, {"train": 5, "val": 2, "test": 2}, seed=0)
