"""Loading pretrained weights into the ViT-3D backbone: key mapping, 2-D -> 3-D inflation, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import ViT
from torch import nn

from cagerisk.deep.pretrained import PretrainedLoadError, load_pretrained

HIDDEN, PATCH, SIZE = 32, 4, 16


def backbone_3d(proj_type: str = "conv") -> ViT:
    return ViT(1, SIZE, PATCH, hidden_size=HIDDEN, mlp_dim=64, num_layers=2, num_heads=4, proj_type=proj_type, qkv_bias=True)


def timm_style_2d_checkpoint(path: Path, in_chans: int = 3, cls_token: bool = True) -> dict[str, torch.Tensor]:
    """A 2-D ViT state dict with timm's names: patch_embed.proj, pos_embed, blocks.N.attn.proj, mlp.fc1..."""
    torch.manual_seed(1)
    grid = SIZE // PATCH
    state = {
        "patch_embed.proj.weight": torch.randn(HIDDEN, in_chans, PATCH, PATCH),
        "patch_embed.proj.bias": torch.randn(HIDDEN),
        "pos_embed": torch.randn(1, grid * grid + int(cls_token), HIDDEN),
        "cls_token": torch.randn(1, 1, HIDDEN),
        "norm.weight": torch.randn(HIDDEN),
        "norm.bias": torch.randn(HIDDEN),
        "head.weight": torch.randn(1000, HIDDEN),
        "head.bias": torch.randn(1000),
    }
    for i in range(2):
        p = f"blocks.{i}."
        state |= {
            p + "norm1.weight": torch.randn(HIDDEN),
            p + "norm1.bias": torch.randn(HIDDEN),
            p + "attn.qkv.weight": torch.randn(3 * HIDDEN, HIDDEN),
            p + "attn.qkv.bias": torch.randn(3 * HIDDEN),
            p + "attn.proj.weight": torch.randn(HIDDEN, HIDDEN),
            p + "attn.proj.bias": torch.randn(HIDDEN),
            p + "norm2.weight": torch.randn(HIDDEN),
            p + "norm2.bias": torch.randn(HIDDEN),
            p + "mlp.fc1.weight": torch.randn(64, HIDDEN),
            p + "mlp.fc1.bias": torch.randn(64),
            p + "mlp.fc2.weight": torch.randn(HIDDEN, 64),
            p + "mlp.fc2.bias": torch.randn(HIDDEN),
        }
    # Saved the way training scripts do: wrapped, with a "model." prefix.
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return state


def test_2d_checkpoint_inflates_into_the_3d_backbone(tmp_path: Path):
    path = tmp_path / "radimagenet_vit2d.pt"
    state = timm_style_2d_checkpoint(path)
    net = backbone_3d()
    report = load_pretrained(net, path)

    assert set(report.inflated) == {"patch_embedding.patch_embeddings.weight", "patch_embedding.position_embeddings"}
    assert "blocks.1.mlp.linear1.weight" in report.loaded and "blocks.0.attn.out_proj.bias" in report.loaded
    assert set(report.unexpected) == {"model.cls_token", "model.head.weight", "model.head.bias"}
    assert report.missing == [
        "blocks.0.norm_cross_attn.weight",
        "blocks.0.norm_cross_attn.bias",
        "blocks.1.norm_cross_attn.weight",
        "blocks.1.norm_cross_attn.bias",
    ]
    torch.testing.assert_close(net.blocks[1].mlp.linear1.weight, state["blocks.1.mlp.fc1.weight"])
    torch.testing.assert_close(net.blocks[0].attn.out_proj.weight, state["blocks.0.attn.proj.weight"])

    # Known answer of I3D inflation: a grey volume constant along the new axis gives the 2-D response
    # of the RGB network to the same grey image (channels summed).
    slice_2d = torch.randn(1, 1, SIZE, SIZE)
    volume = slice_2d[..., None].expand(1, 1, SIZE, SIZE, SIZE)
    out_3d = net.patch_embedding.patch_embeddings(volume)  # [1, D, 4, 4, 4]
    out_2d = nn.functional.conv2d(
        slice_2d.expand(1, 3, SIZE, SIZE), state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH
    )
    for depth in range(out_3d.shape[-1]):
        torch.testing.assert_close(out_3d[..., depth], out_2d, rtol=1e-4, atol=1e-4)
    # Position embeddings: the 2-D grid (class token dropped) repeated along the new axis.
    pos = net.patch_embedding.position_embeddings.reshape(4, 4, 4, HIDDEN)
    grid = state["pos_embed"][0, 1:].reshape(4, 4, HIDDEN)
    for depth in range(4):
        torch.testing.assert_close(pos[:, :, depth], grid)


def test_linear_patch_embedding_inflates(tmp_path: Path):
    torch.manual_seed(0)
    weight = torch.randn(HIDDEN, PATCH * PATCH * 1)
    path = tmp_path / "perceptron2d.pt"
    torch.save({"patch_embedding.patch_embeddings.1.weight": weight}, path)
    net = backbone_3d("perceptron")
    report = load_pretrained(net, path)
    assert report.inflated == ["patch_embedding.patch_embeddings.1.weight"]
    inflated = net.patch_embedding.patch_embeddings[1].weight.reshape(HIDDEN, PATCH, PATCH, PATCH, 1)
    for depth in range(PATCH):
        torch.testing.assert_close(inflated[:, :, :, depth, 0] * PATCH, weight.reshape(HIDDEN, PATCH, PATCH))


def test_own_3d_checkpoint_loads_exactly(tmp_path: Path):
    source = backbone_3d()
    path = tmp_path / "vit3d.ckpt"
    torch.save({"state_dict": {f"net.backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    target = backbone_3d()
    report = load_pretrained(target, path)
    assert not report.inflated and not report.unexpected and not report.missing
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_error_paths(tmp_path: Path):
    net = backbone_3d()
    with pytest.raises(PretrainedLoadError, match=r"missing\.pt does not exist"):
        load_pretrained(net, tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PretrainedLoadError, match=r"garbage\.pt is not a readable PyTorch checkpoint"):
        load_pretrained(net, garbage)
    keras = tmp_path / "resnet50.h5"
    keras.write_bytes(b"\x89HDF")
    with pytest.raises(PretrainedLoadError, match="Keras"):
        load_pretrained(net, keras)
    resnet = tmp_path / "resnet2d.pt"
    torch.save({"conv1.weight": torch.randn(64, 3, 7, 7), "fc.weight": torch.randn(1000, 2048)}, resnet)
    with pytest.raises(PretrainedLoadError, match=r"incompatible with the backbone: none of its 2 tensors"):
        load_pretrained(net, resnet)
    wrong = tmp_path / "wrong_width.pt"
    torch.save({"norm.weight": torch.randn(HIDDEN), "blocks.0.mlp.linear1.weight": torch.randn(99, HIDDEN)}, wrong)
    report = load_pretrained(net, wrong)  # lenient: the odd tensor is skipped and reported
    assert report.loaded == ["norm.weight"] and "blocks.0.mlp.linear1.weight" in report.incompatible
    with pytest.raises(PretrainedLoadError, match=r"incompatible weights: blocks\.0\.mlp\.linear1\.weight"):
        load_pretrained(net, wrong, strict=True)


def test_2d_conv_inflates_into_a_linear_patch_embedding(tmp_path: Path):
    """The CPU config's perceptron embedding takes a 2-D conv checkpoint: same response as the conv."""
    torch.manual_seed(2)
    conv2d = torch.randn(HIDDEN, 3, PATCH, PATCH)
    path = tmp_path / "conv2d.pt"
    torch.save({"patch_embed.proj.weight": conv2d}, path)
    net = backbone_3d("perceptron")
    assert load_pretrained(net, path).inflated == ["patch_embedding.patch_embeddings.1.weight"]
    slice_2d = torch.randn(1, 1, SIZE, SIZE)
    volume = slice_2d[..., None].expand(1, 1, SIZE, SIZE, SIZE).contiguous()
    tokens = net.patch_embedding.patch_embeddings(volume) - net.patch_embedding.patch_embeddings[1].bias
    out_2d = nn.functional.conv2d(slice_2d.expand(1, 3, SIZE, SIZE), conv2d, stride=PATCH)  # [1, D, 4, 4]
    grid = tokens.reshape(1, 4, 4, 4, HIDDEN)  # tokens ordered (h, w, d)
    for depth in range(4):
        torch.testing.assert_close(grid[0, :, :, depth].permute(2, 0, 1), out_2d[0], rtol=1e-4, atol=1e-4)
