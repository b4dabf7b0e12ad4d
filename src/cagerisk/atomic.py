"""Atomic writes: a file is written beside its target and moved into place, so that a killed run never
leaves half a table or half a model where a later stage (or a DVC hash) would read it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["load_torch_bundle", "save_torch_bundle", "write_frame_atomic", "write_text_atomic"]


def write_frame_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """``frame`` as Parquet (``.parquet``) or CSV (anything else), without its index."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        if p.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def save_torch_bundle(fields: dict[str, Any], fmt: str, path: str | Path) -> Path:
    """``torch.save`` of ``fields`` tagged with the bundle format ``fmt``."""
    import torch

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": fmt, **fields}, tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def load_torch_bundle(path: str | Path, fmt: str, what: str, made_by: str) -> dict[str, Any]:
    """The fields of a bundle saved by ``save_torch_bundle`` (tensors and plain data only: no pickled
    code is executed). Errors name the file, what it should be and the command that makes it."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist; run `{made_by}` first")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{what} {p} is not a readable bundle: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{what} {p} is not a {fmt} bundle")
    payload = dict(payload)
    payload.pop("format")
    return payload


def write_text_atomic(text: str, path: str | Path) -> Path:
    """``text`` (UTF-8) at ``path``, written beside it and moved into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
