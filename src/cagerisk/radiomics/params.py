"""PyRadiomics parameter files per sequence: loading, overrides, validation and the settings hash.

Each sequence names a PyRadiomics parameter file (``conf/radiomics/params/*.yaml``, the format of
PyRadiomics' own ``exampleSettings``); ``radiomics.overrides.<sequence>`` merges Hydra-level changes
on top. The settings hash covers the merged parameters and the versions of the libraries that compute
the values, so a cached ROI is reused only when the same numbers would come out again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Bump when the per-ROI computation changes outside PyRadiomics (e.g. how the ROI mask is built).
EXTRACTION_VERSION = 1
PARAM_SECTIONS = ("setting", "imageType", "featureClass", "voxelSetting")


class RadiomicsParamsError(ValueError):
    """A parameter file that is missing, unreadable or rejected by PyRadiomics' schema; names the file."""


@dataclass(frozen=True)
class RadiomicsParams:
    """The PyRadiomics parameters of one sequence, ready to build a ``RadiomicsFeatureExtractor``."""

    sequence: str
    path: Path
    params: dict[str, Any] = field(hash=False, compare=False)
    sha256: str

    def extractor_params(self) -> dict[str, Any]:
        # A copy: PyRadiomics keeps references into the dict it is given.
        return copy.deepcopy(self.params)


def library_versions() -> dict[str, str]:
    """Versions of everything that computes the numbers (part of the settings hash)."""
    import numpy
    import pywt
    import radiomics
    import SimpleITK as sitk

    return {
        "pyradiomics": str(radiomics.__version__),
        "SimpleITK": str(sitk.Version_VersionString()),
        "PyWavelets": str(pywt.__version__),
        "numpy": str(numpy.__version__),
        "extraction": str(EXTRACTION_VERSION),
    }


def repository_root() -> Path:
    """The checkout this package is installed from (editable install): where ``conf/`` lives."""
    return Path(__file__).resolve().parents[3]


def resolve_params_path(path: str | Path, base_dir: str | Path | None = None) -> Path:
    """A relative parameter-file path is looked up under ``base_dir``, the working directory, then the repository."""
    p = Path(path)
    if p.is_absolute():
        return p
    candidates = []
    if base_dir is not None:
        base = Path(base_dir)
        candidates.append(base / p if base.is_absolute() else Path.cwd() / base / p)
        if not base.is_absolute():
            candidates.append(repository_root() / base / p)
    candidates += [Path.cwd() / p, repository_root() / p]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return candidates[0]


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge ``override`` into ``base`` (dicts merge, anything else replaces); ``base`` is untouched."""
    merged = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_params(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_params_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RadiomicsParamsError(f"{p}: PyRadiomics parameter file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise RadiomicsParamsError(f"{p}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise RadiomicsParamsError(f"{p}: expected a mapping with sections {PARAM_SECTIONS}")
    unknown = sorted(set(data) - set(PARAM_SECTIONS))
    if unknown:
        raise RadiomicsParamsError(f"{p}: unknown section(s) {unknown}; expected {PARAM_SECTIONS}")
    return data


def validate_params(params: Mapping[str, Any], source: str) -> None:
    """Run PyRadiomics' own schema check (pykwalify), naming ``source`` in the error."""
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from cagerisk.radiomics.extract import quiet_pyradiomics

    quiet_pyradiomics(logging.WARNING)
    try:
        RadiomicsFeatureExtractor(copy.deepcopy(dict(params)))
    except Exception as err:  # pykwalify raises its own SchemaError; any failure means unusable params
        raise RadiomicsParamsError(f"{source}: rejected by PyRadiomics' parameter schema: {err}") from err


def settings_hash(params: Mapping[str, Any], versions: Mapping[str, str] | None = None) -> str:
    """sha256 of the canonical JSON of the parameters and library versions."""
    payload = {"params": params, "versions": dict(versions if versions is not None else library_versions())}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def sequence_params(
    sequence: str,
    path: str | Path,
    override: Mapping[str, Any] | None = None,
    base_dir: str | Path | None = None,
) -> RadiomicsParams:
    """Load, merge, validate and hash the parameters of one sequence."""
    resolved = resolve_params_path(path, base_dir)
    params = merge_params(load_params_file(resolved), override)
    source = f"{resolved}" + (f" with overrides {dict(override)}" if override else "")
    validate_params(params, source)
    return RadiomicsParams(sequence=sequence, path=resolved, params=params, sha256=settings_hash(params))


def params_by_sequence(radiomics_cfg: Mapping[str, Any], sequences: list[str]) -> dict[str, RadiomicsParams]:
    """``radiomics.params`` (sequence -> file) and ``radiomics.overrides`` -> parameters per sequence."""
    files = radiomics_cfg.get("params") or {}
    overrides = radiomics_cfg.get("overrides") or {}
    base_dir = radiomics_cfg.get("params_dir")
    missing = [s for s in sequences if s not in files]
    if missing:
        raise RadiomicsParamsError(f"radiomics.params has no parameter file for sequence(s) {missing}")
    unknown = sorted(set(overrides) - set(files))
    if unknown:
        raise RadiomicsParamsError(f"radiomics.overrides names unknown sequence(s) {unknown}")
    return {s: sequence_params(s, files[s], _plain(overrides.get(s)), base_dir=base_dir) for s in sequences}


def _plain(node: Any) -> Any:
    """OmegaConf nodes -> plain Python containers (PyRadiomics' schema check wants real dicts/lists)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    return node
