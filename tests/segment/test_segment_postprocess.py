"""Vertebra numbering and Dice against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cagerisk.segment.metrics import per_label_dice, summarise_dice
from cagerisk.segment.model import label_vertebrae_bottom_up, split_tall_bodies

# (i, j, k) -> RAS mm with 2 mm voxels and k pointing superior.
AFFINE_UP = np.diag([2.0, 2.0, 2.0, 1.0])
# The same grid stored with k pointing inferior (k = 0 is the top slice).
AFFINE_DOWN = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, -2.0, 258.0], [0, 0, 0, 1]])


def spine_probability(gaps: list[float] | None = None, bridge: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Six 12-slice bodies stacked from k=2 upwards with 8-slice discs (k 2..113); (probability, truth).

    ``truth`` numbers the bodies top-down 1..6 (L1..S1), so the lowest (k smallest) is 6.
    ``bridge`` puts that probability in the disc slices' centre (a partial-volume bridge).
    """
    prob = np.zeros((20, 20, 130), dtype=np.float32)
    truth = np.zeros(prob.shape, dtype=np.uint8)
    k = 2
    for rank in range(6):
        prob[4:16, 4:16, k : k + 12] = 0.97
        truth[4:16, 4:16, k : k + 12] = 6 - rank
        if rank < 5 and bridge:
            prob[8:12, 8:12, k + 12 : k + 20] = bridge
        k += 20
    return prob, truth


def test_bottom_up_numbering_follows_world_z_not_array_order():
    prob, truth = spine_probability()
    labels, summary = label_vertebrae_bottom_up(prob, AFFINE_UP, min_component_mm3=100.0)
    np.testing.assert_array_equal(labels, truth)
    assert summary == {"components": 6, "kept": 6, "small": 0, "unlabelled": 0}
    # Flipping the array and its affine describes the same patient: the numbering must not change.
    flipped, _ = label_vertebrae_bottom_up(prob[:, :, ::-1], AFFINE_DOWN, min_component_mm3=100.0)
    np.testing.assert_array_equal(flipped[:, :, ::-1], truth)


def test_noise_is_dropped_and_an_extra_top_body_is_left_unlabelled():
    prob, truth = spine_probability()
    prob[0, 0, 0] = 0.9  # one voxel of noise (8 mm^3)
    prob[4:16, 4:16, 122:130] = 0.97  # a seventh body at the top (T12)
    labels, summary = label_vertebrae_bottom_up(prob, AFFINE_UP, min_component_mm3=100.0)
    np.testing.assert_array_equal(labels[:, :, :120], truth[:, :, :120])
    assert labels[0, 0, 0] == 0 and not labels[:, :, 120:].any()
    assert summary["small"] == 1 and summary["unlabelled"] == 1


def test_bodies_joined_by_an_uncertain_bridge_are_split():
    prob, truth = spine_probability(bridge=0.6)  # > 0.5: one connected component at the usual threshold
    labels, _ = label_vertebrae_bottom_up(prob, AFFINE_UP, min_component_mm3=100.0)
    bodies = truth > 0
    np.testing.assert_array_equal(labels[bodies], truth[bodies])


def test_confident_bridge_is_cut_at_the_weakest_slice():
    prob, truth = spine_probability()
    # One thick slice through the L3-L4 disc called bone with certainty: L3 and L4 form one component.
    prob[4:16, 4:16, 54:62] = 0.97
    prob[4:16, 4:16, 58] = 0.9  # ...a little less certain in the disc's middle
    merged = (prob >= 0.5).astype(np.int32)
    from scipy import ndimage

    components, n = ndimage.label(merged)
    assert n == 5
    split = split_tall_bodies(components, prob, AFFINE_UP, max_bodies=6)
    assert len(np.unique(split[split > 0])) == 6
    assert not split[:, :, 58].any(), "the cut is the weakest slice"
    labels, _ = label_vertebrae_bottom_up(prob, AFFINE_UP, min_component_mm3=100.0)
    bodies = truth > 0
    np.testing.assert_array_equal(labels[bodies], truth[bodies])


def test_per_label_dice_known_answer():
    reference = np.zeros((10, 10, 10), dtype=np.uint8)
    prediction = np.zeros_like(reference)
    reference[0:4, 0:5, 0:5] = 1  # 100 voxels
    prediction[2:6, 0:5, 0:5] = 1  # 100 voxels, 50 shared -> Dice 0.5
    reference[6:8, 6:8, 6:8] = 2  # 8 voxels, predicted as label 3 -> Dice 0 for 2
    prediction[6:8, 6:8, 6:8] = 3
    scores = per_label_dice(prediction, reference, [1, 2, 3, 4])
    assert scores["vertebra_L1"] == pytest.approx(0.5)
    assert scores["vertebra_L2"] == 0.0
    assert np.isnan(scores["vertebra_L3"]) and np.isnan(scores["vertebra_L4"])  # absent from the reference
    summary = summarise_dice({"a": {"vertebra_L1": 0.5, "vertebra_L2": 0.0}, "b": {"vertebra_L1": 1.0, "vertebra_L2": np.nan}})
    assert summary == {"vertebra_L1": 0.75, "vertebra_L2": 0.0, "mean": 0.375}
    with pytest.raises(ValueError, match="shape"):
        per_label_dice(prediction[:5], reference, [1])
