"""Typed (Hydra structured) configs: one dataclass per config group that code reads.

The YAML files under ``conf/`` keep the values; these dataclasses give them types, so code reads
``cfg.radiomics.bin_width`` as a float without casting, and a wrong type fails at composition with
the key's name. Stages turn their group into its dataclass with ``OmegaConf.to_object``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

__all__ = ["CONF_DIR", "ConfigError", "compose", "typed"]

# The repository's conf/ (src/cagerisk/config/__init__.py -> repo root): what `cagerisk <command>` composes.
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


class ConfigError(ValueError):
    """A config group does not match its schema; the message names the key (e.g. ``radiomics.bin_width``)."""


def typed(node: DictConfig | dict[str, Any], schema: type[T], key: str) -> T:
    """The config group ``node`` (interpolations resolved) as an instance of the dataclass ``schema``.

    Every key must exist in the schema and every value must convert to its field's type; otherwise a
    :class:`ConfigError` names ``key.field``. Values come from the YAML (their one home); the schema
    only types them.
    """
    if not is_dataclass(schema):
        raise TypeError(f"{schema!r} is not a dataclass")
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        where = f"{key}.{exc.full_key}" if getattr(exc, "full_key", None) else key
        raise ConfigError(f"config {where}: {getattr(exc, 'msg', exc)}") from None


def compose(overrides: Sequence[str] = (), config_dir: str | Path = CONF_DIR) -> DictConfig:
    """The config ``cagerisk <command> overrides...`` composes (for notebooks, benchmarks and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))
