import pytest

from cagerisk.cohort.schema import (
    LABELS,
    ROIS,
    SEQUENCE_STRUCTURES,
    SEQUENCES,
    allowed_label_values,
    parse_levels,
    roi_label_values,
    sequence_rois,
)


def test_label_map_is_complete_and_unique():
    assert len(set(LABELS.values())) == len(LABELS)
    covered = set().union(*(allowed_label_values(s) for s in SEQUENCES)) - {0}
    assert covered == set(LABELS.values())


def test_rois_cover_every_structure_of_the_study():
    assert ("ct", "vertebra") in sequence_rois()
    assert {("t1", "disc"), ("t2", "disc"), ("t2ax", "psoas"), ("t2ax", "quadratus"), ("t1ax", "paraspinal")} <= set(
        sequence_rois()
    )
    assert all("_" not in s for s in SEQUENCES) and all("_" not in r for rois in ROIS.values() for r in rois)
    assert SEQUENCE_STRUCTURES.keys() == set(SEQUENCES)


@pytest.mark.parametrize(
    ("levels", "roi", "expected"),
    [
        ("L4-L5", "vertebra", [LABELS[f"vertebra_{v}"] for v in ("L3", "L4", "L5", "S1")]),
        ("L5-S1", "vertebra", [LABELS[f"vertebra_{v}"] for v in ("L4", "L5", "S1")]),
        ("L1-L2", "vertebra", [LABELS[f"vertebra_{v}"] for v in ("L1", "L2", "L3")]),
        ("L3-L4;L4-L5", "disc", [LABELS[f"disc_{v}"] for v in ("L2-L3", "L3-L4", "L4-L5", "L5-S1")]),
        ("L5-S1", "disc", [LABELS["disc_L4-L5"], LABELS["disc_L5-S1"]]),
        ("L4-L5", "psoas", [LABELS["psoas_left"], LABELS["psoas_right"]]),
    ],
)
def test_roi_label_values_are_fused_levels_and_neighbours(levels, roi, expected):
    assert roi_label_values(levels, roi) == expected


def test_bad_levels_and_rois_are_named():
    with pytest.raises(ValueError, match="L6-S1"):
        parse_levels("L4-L5;L6-S1")
    with pytest.raises(ValueError, match="expected"):
        parse_levels("")
    with pytest.raises(ValueError, match="unknown ROI 'liver'"):
        roi_label_values("L4-L5", "liver")
    assert parse_levels("L5-S1; L4-L5") == ["L4-L5", "L5-S1"]


def test_is_blank_is_the_one_definition_of_an_empty_cell():
    import numpy as np
    import pandas as pd

    from cagerisk.cohort.schema import is_blank

    for blank in (None, pd.NA, pd.NaT, float("nan"), np.nan, "", "   ", "\t"):
        assert is_blank(blank), repr(blank)
    for value in ("a.nii.gz", " x ", 0, 0.0, 1.5, False, "nan"):
        assert not is_blank(value), repr(value)
