"""cagerisk.config.typed: YAML values typed by a dataclass, errors that name the key."""

from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from cagerisk.config import ConfigError, typed


@dataclass
class Inner:
    sigma: list[float] = field(default_factory=list)


@dataclass
class Group:
    bin_width: float
    jobs: int
    name: str
    inner: Inner = field(default_factory=Inner)


def test_values_are_typed_and_interpolations_resolved():
    cfg = OmegaConf.create({"n": 3, "g": {"bin_width": "25", "jobs": "${n}", "name": "x", "inner": {"sigma": [1, "4.0"]}}})
    g = typed(cfg.g, Group, "g")
    assert isinstance(g, Group) and g.bin_width == 25.0 and g.jobs == 3 and g.inner.sigma == [1.0, 4.0]
    assert isinstance(g.jobs, int) and isinstance(g.bin_width, float)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"radiomics\.jobs"):
        typed({"bin_width": 1.0, "jobs": "many", "name": "x"}, Group, "radiomics")


def test_unknown_key_names_it():
    with pytest.raises(ConfigError, match="bin_widht"):
        typed({"bin_widht": 1.0, "jobs": 1, "name": "x"}, Group, "radiomics")


def test_missing_value_names_the_key():
    with pytest.raises(ConfigError, match=r"radiomics\.name"):
        typed({"bin_width": 1.0, "jobs": 1}, Group, "radiomics")


def test_compose_gives_the_cli_config_with_overrides():
    from cagerisk.config import compose

    cfg = compose(["cohort=tiny", "paths.data=/tmp/x"])
    assert cfg.paths.data == "/tmp/x" and "radiomics" in cfg and "sweep" in cfg
