"""The ViT-3D deep-radiomics network: one shared backbone for every (sequence, ROI) input.

The study feeds one input per sequence and ROI (CT vertebrae; T1/T2 vertebrae and discs; axial
muscles). Training one ViT per input would multiply CPU time by eleven and give each model a few
hundred samples; instead one backbone sees all inputs, and a learned input-type embedding (added to
every patch token, like a position embedding) tells it which sequence and ROI it is looking at.
The pooled tokens go through a small projection whose output is the exported embedding (the
penultimate layer), then through the binary cage-subsidence head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from monai.networks.nets import ViT
from torch import nn

__all__ = ["DeepRadiomicsNet", "build_deep_net", "input_key"]


def input_key(sequence: str, roi: str) -> str:
    """``t2_disc``: the prefix of an input's feature columns."""
    return f"{sequence}_{roi}"


class DeepRadiomicsNet(nn.Module):
    """MONAI ViT backbone + input-type embedding + mean-pooled projection + CS logit.

    Args:
        backbone: a ``monai.networks.nets.ViT`` built without its own classification head.
        inputs: the (sequence, roi) pairs, in the order of the input-type indices.
        embed_dim: size of the exported embedding (the layer before the CS logit).
        dropout: dropout on the pooled tokens during training.
    """

    def __init__(self, backbone: ViT, inputs: Sequence[Sequence[str]], embed_dim: int = 16, dropout: float = 0.1):
        super().__init__()
        if getattr(backbone, "classification", False):
            raise ValueError("the ViT backbone must be built with classification=False; the CS head is ours")
        self.backbone = backbone
        self.inputs = [tuple(pair) for pair in inputs]
        hidden = int(backbone.norm.normalized_shape[0])
        self.hidden_size = hidden
        self.embed_dim = int(embed_dim)
        self.input_embedding = nn.Embedding(len(self.inputs), hidden)
        nn.init.trunc_normal_(self.input_embedding.weight, std=0.02)
        self.projection = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.embed_dim), nn.Tanh())
        self.classifier = nn.Linear(self.embed_dim, 1)

    def input_index(self, sequence: str, roi: str) -> int:
        try:
            return self.inputs.index((sequence, roi))
        except ValueError:
            raise KeyError(f"input {sequence}/{roi} is not one of the network's inputs {self.inputs}") from None

    def pooled(self, image: torch.Tensor, input_index: torch.Tensor) -> torch.Tensor:
        """Mean of the backbone's final (normed) tokens: ``[batch, hidden]``."""
        tokens = self.backbone.patch_embedding(image)
        tokens = tokens + self.input_embedding(input_index)[:, None, :]
        for block in self.backbone.blocks:
            tokens = block(tokens)
        return self.backbone.norm(tokens).mean(dim=1)

    def embed(self, image: torch.Tensor, input_index: torch.Tensor) -> torch.Tensor:
        """The exported deep features: ``[batch, embed_dim]``, the layer feeding the CS logit."""
        return self.projection(self.pooled(image, input_index))

    def forward(self, image: torch.Tensor, input_index: torch.Tensor) -> torch.Tensor:
        """CS logits, ``[batch]``."""
        return self.classifier(self.embed(image, input_index)).squeeze(-1)


def build_deep_net(deep_cfg: Mapping[str, Any], inputs: Sequence[Sequence[str]]) -> DeepRadiomicsNet:
    """Instantiate ``deep.backbone`` (a ``_target_`` node) and wrap it; shapes come from the config."""
    backbone = instantiate(deep_cfg["backbone"], _convert_="all")
    if not isinstance(backbone, ViT):
        raise TypeError(f"deep.backbone must build a monai.networks.nets.ViT, got {type(backbone).__name__}")
    head = deep_cfg["head"]
    return DeepRadiomicsNet(backbone, inputs, embed_dim=head["embed_dim"], dropout=head["dropout"])
