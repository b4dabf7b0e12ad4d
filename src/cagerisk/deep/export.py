"""Deep-feature export: pooled penultimate embeddings per (patient, sequence, ROI), and scoring-time use.

``embedding_table`` has one row per patient (``patient_id``) and columns ``{sequence}_{roi}_dl_{k}``; a
patient missing an input has NaN in that input's columns. The bundle holds the K cross-fitted fold
networks (``cagerisk-deep-2``) and the patients each was trained on; ``DeepEmbedder`` loads it and embeds a
new patient's volumes with every fold network, with the very preprocessing used for training, into the
columns ``{sequence}_{roi}_dl_{k}_f{j}`` the DL-sign reads (a ``cagerisk-deep-1`` bundle of one network
gives the plain columns).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cagerisk.atomic import load_torch_bundle, save_torch_bundle
from cagerisk.cohort.schema import ID
from cagerisk.deep.model import DeepRadiomicsNet, build_deep_net, input_key
from cagerisk.deep.preprocess import PreprocessSettings, preprocess_volume
from cagerisk.deep.table import fold_column

__all__ = [
    "DeepBundle",
    "DeepEmbedder",
    "embed_samples",
    "embedding_table",
    "feature_columns",
    "load_deep_bundle",
    "save_deep_bundle",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "cagerisk-deep-2"
SINGLE_NETWORK_FORMAT = "cagerisk-deep-1"  # one network, plain columns: bundles made before cross-fitting


def feature_columns(inputs: Sequence[tuple[str, str]], embed_dim: int) -> list[str]:
    return [f"{input_key(seq, roi)}_dl_{k}" for seq, roi in inputs for k in range(embed_dim)]


@torch.no_grad()
def embed_samples(
    net: DeepRadiomicsNet, samples: Sequence[dict[str, Any]], batch_size: int = 16, device: str = "cpu"
) -> np.ndarray:
    """Embeddings ``[n_samples, embed_dim]`` in evaluation mode (no dropout, no augmentation)."""
    net = net.to(device).eval()
    out = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        image = torch.stack([s["image"] for s in chunk]).to(device)
        index = torch.tensor([s["input_index"] for s in chunk], device=device)
        out.append(net.embed(image, index).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.embed_dim), dtype=np.float32)


def embedding_table(
    samples: Sequence[dict[str, Any]], embeddings: np.ndarray, inputs: Sequence[tuple[str, str]], patient_ids: Sequence[str]
) -> pd.DataFrame:
    """Wide table: one row per patient in ``patient_ids`` order, ``{sequence}_{roi}_dl_{k}`` columns."""
    embed_dim = embeddings.shape[1]
    columns = feature_columns(inputs, embed_dim)
    row_of = {str(pid): i for i, pid in enumerate(patient_ids)}
    values = np.full((len(patient_ids), len(columns)), np.nan, dtype=np.float32)
    for sample, emb in zip(samples, embeddings, strict=True):
        j = inputs.index((sample["sequence"], sample["roi"])) * embed_dim
        values[row_of[str(sample[ID])], j : j + embed_dim] = emb
    table = pd.DataFrame(values, columns=columns)
    table.insert(0, ID, [str(p) for p in patient_ids])
    return table


@dataclass
class DeepBundle:
    """What scoring needs: network config, the fold networks' weights, the inputs' order and the preprocessing.

    ``state_dicts[j]`` is fold network j; ``trained_on[j]`` the patients whose labels it was fitted on (its
    training part and its inner early-stopping part). ``crossfit`` false: one network (a
    ``cagerisk-deep-1`` bundle), whose features keep the plain column names.
    """

    deep_cfg: dict[str, Any]  # backbone `_target_` node and head
    inputs: list[list[str]]
    state_dicts: list[dict[str, torch.Tensor]]
    input_size: int
    margin_mm: float
    trained_on: list[list[str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    crossfit: bool = True

    @property
    def n_folds(self) -> int:
        return len(self.state_dicts)

    def build(self, fold: int = 0) -> DeepRadiomicsNet:
        net = build_deep_net(self.deep_cfg, [tuple(p) for p in self.inputs])
        net.load_state_dict(self.state_dicts[fold])
        return net.eval()

    @property
    def embed_dim(self) -> int:
        return int((self.deep_cfg.get("head") or {}).get("embed_dim", 16))

    def columns(self) -> list[str]:
        """The feature columns the bundle's networks give, fold by fold."""
        base = feature_columns([tuple(p) for p in self.inputs], self.embed_dim)
        if not self.crossfit:
            return base
        return [fold_column(c, j) for j in range(self.n_folds) for c in base]


def save_deep_bundle(bundle: DeepBundle, path: str | Path) -> Path:
    fields = asdict(bundle)
    fields.pop("crossfit")
    return save_torch_bundle(fields, BUNDLE_FORMAT, path)


def load_deep_bundle(path: str | Path) -> DeepBundle:
    try:
        return DeepBundle(**load_torch_bundle(path, BUNDLE_FORMAT, "deep model", "cagerisk deep"))
    except ValueError as err:
        try:
            fields = load_torch_bundle(path, SINGLE_NETWORK_FORMAT, "deep model", "cagerisk deep")
        except ValueError:
            raise err from None
    fields["state_dicts"] = [fields.pop("state_dict")]
    return DeepBundle(**fields, crossfit=False)


class DeepEmbedder:
    """The trained fold networks of the ViT-3D as a feature extractor for one new patient.

    ``embed({"ct": (ct_image, ct_mask), "t2": (t2_image, t2_mask), ...}, "L4-L5")`` returns the
    ``{sequence}_{roi}_dl_{k}_f{j}`` features of every fold network j (plain ``{sequence}_{roi}_dl_{k}``
    for a single-network bundle); images and masks are paths or in-memory volumes (SimpleITK, nibabel,
    (array, RAS affine) or MetaTensor). The volumes are preprocessed once. Sequences not given yield NaN
    features.
    """

    def __init__(self, bundle: DeepBundle, device: str = "cpu") -> None:
        self.bundle = bundle
        self.device = device
        self.nets = [bundle.build(j).to(device) for j in range(bundle.n_folds)]
        self.net = self.nets[0]
        self.inputs = [tuple(p) for p in bundle.inputs]
        self.settings = PreprocessSettings(int(bundle.input_size), float(bundle.margin_mm))

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> DeepEmbedder:
        return cls(load_deep_bundle(path), device=device)

    @property
    def columns(self) -> list[str]:
        return self.bundle.columns()

    def embed(self, volumes: Mapping[str, tuple[Any, Any]], fused_levels: str, patient_id: str = "new") -> dict[str, float]:
        samples = []
        for sequence, (image, mask) in volumes.items():
            rois = [roi for seq, roi in self.inputs if seq == sequence]
            if not rois:
                raise KeyError(f"sequence {sequence!r} is not an input of the deep model ({self.inputs})")
            cubes = preprocess_volume(image, mask, fused_levels, sequence, rois, self.settings, patient_id=patient_id)
            for roi, cube in cubes.items():
                samples.append(
                    {
                        "image": cube,
                        "input_index": self.inputs.index((sequence, roi)),
                        ID: patient_id,
                        "sequence": sequence,
                        "roi": roi,
                    }
                )
        if not samples:
            return dict.fromkeys(self.columns, float("nan"))
        features: dict[str, float] = {}
        for fold, net in enumerate(self.nets):
            table = embedding_table(samples, embed_samples(net, samples, device=self.device), self.inputs, [patient_id])
            for k, v in table.drop(columns=[ID]).iloc[0].items():
                features[fold_column(k, fold) if self.bundle.crossfit else k] = float(v)
        return features
