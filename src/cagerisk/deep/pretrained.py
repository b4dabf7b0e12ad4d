"""Load pretrained weights into the ViT-3D backbone, inflating 2-D weights to 3-D where shapes allow.

The study initialises its ViT-3D from RadImageNet. RadImageNet publishes 2-D networks, so a
checkpoint may hold 2-D weights: a patch-embedding convolution ``[D, C, p, p]`` becomes
``[D, C, p, p, p]`` by repeating the kernel along the new (last) axis and dividing by its length
(the I3D inflation: a volume constant along that axis then gives the 2-D response), a linear patch
embedding ``[D, p*p*C]`` the same way, and a 2-D position-embedding grid is tiled along the new axis.
RGB input channels are summed onto a single grey channel. Keys are renamed by an ordered list of
regular-expression substitutions, so timm / torchvision-style names (``patch_embed.proj``,
``attn.proj``, ``mlp.fc1``) and wrapped checkpoints (``state_dict``, ``model.``, ``backbone.``)
both load. Nothing is downloaded: the file must already be on disk.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_KEY_MAP", "PretrainedLoadError", "PretrainedReport", "load_pretrained", "read_state_dict"]

log = logging.getLogger(__name__)

# (pattern, replacement) applied in order to every checkpoint key.
DEFAULT_KEY_MAP: tuple[tuple[str, str], ...] = (
    # Wrappers: Lightning ("state_dict" already unwrapped) and our own net ("net.backbone.").
    (r"^(?:module\.|model\.|net\.|encoder\.|backbone\.|vit\.)+", ""),
    # timm / torchvision-style ViT names -> MONAI ViT names.
    (r"^patch_embed\.proj\.", "patch_embedding.patch_embeddings."),
    (r"^conv_proj\.", "patch_embedding.patch_embeddings."),
    (r"^pos_embed$", "patch_embedding.position_embeddings"),
    (r"^encoder_layer_(\d+)\.|^layers\.encoder_layer_(\d+)\.", r"blocks.\1\2."),
    (r"\.ln_1\.", ".norm1."),
    (r"\.ln_2\.", ".norm2."),
    (r"\.self_attention\.in_proj_", ".attn.qkv."),
    (r"\.self_attention\.out_proj\.", ".attn.out_proj."),
    (r"\.attn\.proj\.", ".attn.out_proj."),
    (r"\.mlp\.fc1\.", ".mlp.linear1."),
    (r"\.mlp\.fc2\.", ".mlp.linear2."),
    (r"\.mlp\.0\.", ".mlp.linear1."),
    (r"\.mlp\.3\.", ".mlp.linear2."),
    (r"^ln\.", "norm."),
)


# MONAI names the patch embedding's weights differently for its two projection types (a conv, or a
# rearrange followed by a linear layer); a checkpoint of one loads into the other.
_PATCH_ALIASES = {
    "patch_embedding.patch_embeddings.weight": "patch_embedding.patch_embeddings.1.weight",
    "patch_embedding.patch_embeddings.bias": "patch_embedding.patch_embeddings.1.bias",
}
_PATCH_ALIASES |= {v: k for k, v in _PATCH_ALIASES.items()}


class PretrainedLoadError(ValueError):
    """A pretrained checkpoint that is missing, unreadable or shares no weight with the backbone."""


@dataclass
class PretrainedReport:
    """What happened to every key: copied, inflated 2-D -> 3-D, skipped, or left at initialisation."""

    path: str
    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    incompatible: dict[str, str] = field(default_factory=dict)  # target key -> why
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys with no target
    missing: list[str] = field(default_factory=list)  # backbone keys left at initialisation

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in asdict(self).items() if k != "path"}

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{self.path}: {c['loaded']} loaded, {c['inflated']} inflated 2-D->3-D, "
            f"{c['incompatible']} incompatible, {c['unexpected']} unexpected, {c['missing']} missing"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a PyTorch checkpoint (plain state dict, or wrapped in state_dict/model/...)."""
    p = Path(path)
    if not p.is_file():
        raise PretrainedLoadError(f"pretrained checkpoint {p} does not exist (nothing is downloaded at run time)")
    if p.suffix.lower() in {".h5", ".hdf5", ".keras"}:
        raise PretrainedLoadError(
            f"pretrained checkpoint {p} is a Keras file; convert it to a PyTorch state dict (torch.save) first"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedLoadError(f"pretrained checkpoint {p} is not a readable PyTorch checkpoint: {exc}") from exc
    for wrapper in ("state_dict", "model_state_dict", "model", "module", "net"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise PretrainedLoadError(f"pretrained checkpoint {p} holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PretrainedLoadError(f"pretrained checkpoint {p} holds no tensors")
    return tensors


def map_key(key: str, key_map: Sequence[Sequence[str]]) -> str:
    for pattern, replacement in key_map:
        key = re.sub(pattern, replacement, key)
    return key


def _reduce_channels(weight: torch.Tensor, axis: int, target_channels: int) -> torch.Tensor | None:
    """RGB -> grey by summing input channels (keeps the response to a grey image)."""
    if weight.shape[axis] == target_channels:
        return weight
    if target_channels == 1:
        return weight.sum(dim=axis, keepdim=True)
    return None


def adapt_tensor(source: torch.Tensor, target: torch.Tensor, key: str) -> tuple[torch.Tensor | None, str]:
    """``(tensor shaped like target, how)``; ``(None, reason)`` when the shapes do not allow it."""
    if source.shape == target.shape:
        return source.to(target.dtype), "loaded"
    # Patch-embedding convolution [D, C, p, p] -> [D, C, p, p, q].
    if source.ndim == 4 and target.ndim == 5 and source.shape[0] == target.shape[0]:
        weight = _reduce_channels(source, 1, target.shape[1])
        if weight is not None and tuple(weight.shape[2:]) == tuple(target.shape[2:4]):
            depth = target.shape[4]
            return (weight.unsqueeze(-1).repeat(1, 1, 1, 1, depth) / depth).to(target.dtype), "inflated"
    # 2-D patch convolution [D, C, p, p] -> linear patch embedding [D, p*p*p*C] (order (p1 p2 p3 c)).
    if source.ndim == 4 and target.ndim == 2 and source.shape[0] == target.shape[0]:
        weight = _reduce_channels(source, 1, 1)
        p = source.shape[2]
        if source.shape[2] == source.shape[3] and weight is not None and p**3 == target.shape[1]:
            conv3d = weight.unsqueeze(-1).repeat(1, 1, 1, 1, p) / p  # [D, 1, p, p, p]
            return conv3d.permute(0, 2, 3, 4, 1).reshape(target.shape).to(target.dtype), "inflated"
    # Linear patch embedding [D, p*p*C] -> [D, p*p*q*C] (MONAI's "perceptron" order (p1 p2 p3 c)).
    if source.ndim == 2 and target.ndim == 2 and source.shape[0] == target.shape[0] and key.endswith("weight"):
        inflated = _inflate_linear_patch(source, target.shape[1])
        if inflated is not None:
            return inflated.to(target.dtype), "inflated"
    # Position embeddings [1, (cls +) s*s, D] -> [1, g1*g2*g3, D].
    if source.ndim == 3 and target.ndim == 3 and source.shape[-1] == target.shape[-1] and "position" in key:
        return _inflate_positions(source, target)
    return None, f"checkpoint shape {tuple(source.shape)} cannot be adapted to {tuple(target.shape)}"


def _inflate_linear_patch(source: torch.Tensor, target_in: int) -> torch.Tensor | None:
    dim, source_in = source.shape
    for channels in (1, 3):
        side2 = source_in / channels
        p = math.isqrt(int(side2)) if side2 == int(side2) else 0
        if p and p * p * channels == source_in and p * p * p == target_in:
            weight = source.reshape(dim, p, p, channels).sum(dim=-1)  # grey
            return (weight.unsqueeze(3).repeat(1, 1, 1, p) / p).reshape(dim, target_in)
    return None


def _inflate_positions(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    n_source, n_target, dim = source.shape[1], target.shape[1], source.shape[2]
    grid = source[0]
    side = math.isqrt(n_source)
    if side * side != n_source and math.isqrt(n_source - 1) ** 2 == n_source - 1:
        grid, side = grid[1:], math.isqrt(n_source - 1)  # drop the class token's position
    elif side * side != n_source:
        return None, f"position embedding of {n_source} tokens is not a square 2-D grid"
    g = round(n_target ** (1 / 3))
    if g**3 != n_target:
        return None, f"target position embedding of {n_target} tokens is not a cubic grid"
    plane = grid.reshape(side, side, dim).permute(2, 0, 1)[None]
    if side != g:
        plane = F.interpolate(plane, size=(g, g), mode="bilinear", align_corners=False)
    # (1, D, g, g) -> tokens ordered (h, w, d) like MONAI's flattened conv output.
    volume = plane[0].permute(1, 2, 0)[:, :, None, :].expand(g, g, g, dim)
    return volume.reshape(1, n_target, dim).to(target.dtype).contiguous(), "inflated"


def load_pretrained(
    backbone: nn.Module,
    path: str | Path,
    key_map: Sequence[Sequence[str]] | None = None,
    strict: bool = False,
) -> PretrainedReport:
    """Copy a checkpoint's weights into ``backbone`` in place and report every key's fate.

    Args:
        backbone: the module to initialise (the MONAI ViT).
        path: a PyTorch checkpoint on disk.
        key_map: ``[(pattern, replacement), ...]`` applied in order; ``DEFAULT_KEY_MAP`` when None.
        strict: raise when any mapped key has an incompatible shape (by default it is skipped and
            reported).

    Raises:
        PretrainedLoadError: missing or unreadable file, or a checkpoint of which no weight fits.
    """
    key_map = DEFAULT_KEY_MAP if key_map is None else [tuple(pair) for pair in key_map]
    source = read_state_dict(path)
    target = backbone.state_dict()
    report = PretrainedReport(path=str(path))
    new_state: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        mapped = map_key(key, key_map)
        if mapped not in target and _PATCH_ALIASES.get(mapped) in target:
            mapped = _PATCH_ALIASES[mapped]
        if mapped not in target:
            report.unexpected.append(key)
            continue
        adapted, how = adapt_tensor(tensor, target[mapped], mapped)
        if adapted is None:
            report.incompatible[mapped] = f"{key}: {how}"
            continue
        new_state[mapped] = adapted
        (report.loaded if how == "loaded" else report.inflated).append(mapped)
    report.missing = [k for k in target if k not in new_state]
    if not new_state:
        sample = ", ".join(list(source)[:5])
        raise PretrainedLoadError(
            f"pretrained checkpoint {path} is incompatible with the backbone: none of its {len(source)} "
            f"tensors maps onto it (first keys: {sample}); check deep.pretrained_key_map"
        )
    if strict and report.incompatible:
        detail = "; ".join(f"{k} ({why})" for k, why in report.incompatible.items())
        raise PretrainedLoadError(f"pretrained checkpoint {path}: incompatible weights: {detail}")
    backbone.load_state_dict(new_state, strict=False)
    log.info("pretrained weights: %s", report.summary())
    for key, why in report.incompatible.items():
        log.warning("pretrained weight %s skipped: %s", key, why)
    return report
