"""The service process's own housekeeping (cagerisk/serving/service.py): the loaded objects frozen out
of the cyclic garbage collector's reach, and value arrays built from validated lists."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

from cagerisk.serving.service import _float_array, freeze_loaded_objects


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()


def test_loaded_objects_leave_the_collectors_generations_and_new_garbage_is_still_collected(unfrozen):
    loaded = [[i] for i in range(1000)]  # stands for the model: containers that live as long as the worker
    loaded.append(loaded)  # and a cycle among them
    assert any(o is loaded for o in gc.get_objects())

    frozen = freeze_loaded_objects()

    # (Frozen objects that die are still freed, so the count may only fall afterwards: while `loaded`
    # lives, its 1,001 containers stay counted.)
    assert frozen >= len(loaded) and gc.get_freeze_count() >= len(loaded)
    # A collection no longer traverses them (what made its pauses scale with the model's size) ...
    assert not any(o is loaded for o in gc.get_objects())
    # ... while garbage made afterwards (requests) is still found and freed.
    cycle: list = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


def test_value_lists_become_float_arrays_with_missing_values_as_nan():
    assert _float_array([1.5, 2, -3.25]).tolist() == [1.5, 2.0, -3.25]
    assert _float_array([1.5, 2, -3.25]).dtype == np.float64
    with_missing = _float_array([None, 1.0, None])
    assert math.isnan(with_missing[0]) and with_missing[1] == 1.0 and math.isnan(with_missing[2])
    assert _float_array([]).shape == (0,)
