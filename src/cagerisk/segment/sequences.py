"""One ``segment`` config per sequence: the shared keys with ``segment.sequences.<seq>`` on top.

Every sequence's U-Net is built, trained and run by the same code; what differs (labels, spacing,
intensity scaling, patch size, network size, epochs, which mask later stages use) is configuration.
The labels are not configured: they are the manifest contract's (``SEQUENCE_STRUCTURES``).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cagerisk.cohort.schema import SEQUENCE_STRUCTURES, SEQUENCES
from cagerisk.config import typed
from cagerisk.config.pipeline import SegmentConfig
from cagerisk.segment.model import canonical_mode, class_labels, structure_labels

__all__ = ["SEQUENCE_TOKEN", "model_path_for", "segmented_sequences", "sequence_classes", "sequence_config"]

SEQUENCE_TOKEN = "{sequence}"


def segmented_sequences(config: SegmentConfig) -> list[str]:
    """The sequences with a U-Net (the keys of ``segment.sequences``), in the study's order."""
    unknown = sorted(set(config.sequences) - set(SEQUENCES))
    if unknown:
        raise ValueError(f"segment.sequences: unknown sequence(s) {unknown}; expected among {list(SEQUENCES)}")
    return [seq for seq in SEQUENCES if seq in config.sequences]


def model_path_for(template: str | Path, sequence: str) -> Path:
    """``segment.model_path`` of one sequence (``{sequence}`` replaced)."""
    text = str(template)
    if SEQUENCE_TOKEN not in text and sequence != "ct":
        # A path without the token is the CT's (a config from before per-sequence U-Nets).
        raise ValueError(f"segment.model_path {text!r} has no {SEQUENCE_TOKEN}: one file cannot hold the {sequence} U-Net")
    return Path(text.replace(SEQUENCE_TOKEN, sequence))


def sequence_classes(config: SegmentConfig, sequence: str) -> list[list[int]]:
    """Label values of each network class of ``sequence``'s U-Net."""
    return class_labels(config.mode, structure_labels(SEQUENCE_STRUCTURES[sequence]))


def sequence_config(config: SegmentConfig, sequence: str) -> SegmentConfig:
    """The config of one sequence's U-Net: overrides merged (nested keys such as ``net.channels`` one by
    one), its own model file and checkpoint folder, ``net.out_channels`` from its classes."""
    if sequence not in config.sequences:
        raise ValueError(f"segment.sequences has no entry for {sequence!r}")
    base = {k: v for k, v in asdict(config).items() if k != "sequences"}
    overrides: Any = config.sequences[sequence] or {}
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"segment.sequences.{sequence}: unknown key(s) {unknown}")
    merged = OmegaConf.to_container(OmegaConf.merge(base, overrides), resolve=True)
    out = typed(merged, SegmentConfig, f"segment.sequences.{sequence}")
    classes = class_labels(canonical_mode(out.mode), structure_labels(SEQUENCE_STRUCTURES[sequence]))
    return replace(
        out,
        mode=canonical_mode(out.mode),
        model_path=str(model_path_for(config.model_path, sequence)),
        checkpoint_dir=str(Path(config.checkpoint_dir) / sequence),
        net={**out.net, "out_channels": len(classes) + 1},
    )
