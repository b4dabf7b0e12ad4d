"""Settings of the scoring endpoint: ``conf/serve/default.yaml`` with environment overrides.

The service is started by ``bentoml serve`` (no Hydra command line), so it reads the serve group's
YAML itself: ``$CAGERISK_SERVE_CONFIG`` if set, else ``conf/serve/default.yaml`` in the working
directory (a bento's ``src/``) or in the checkout. ``${oc.env:...}`` entries in that file pick up
``CAGERISK_*`` variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONFIG_ENV = "CAGERISK_SERVE_CONFIG"
RELATIVE_CONFIG = Path("conf") / "serve" / "default.yaml"


def repository_root() -> Path:
    return Path(__file__).resolve().parents[3]


def settings_file() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV}={explicit}: no such file")
        return path
    for candidate in (Path.cwd() / RELATIVE_CONFIG, repository_root() / RELATIVE_CONFIG):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{RELATIVE_CONFIG} not found in {Path.cwd()} or {repository_root()}; set {CONFIG_ENV}")


@dataclass(frozen=True)
class ServeSettings:
    model_name: str
    champion_alias: str
    bento_model: str
    model_uri: str | None
    host: str
    port: int
    workers: int
    timeout_s: int
    max_request_mb: float
    max_file_mb: float
    api_key_env: str
    max_batch_size: int
    max_latency_ms: int
    bentoml_home: str
    # Worker processes of /score's PyRadiomics (0: one per core, at most one per ROI group; 1: none).
    radiomics_processes: int = 0

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @classmethod
    def from_mapping(cls, cfg: Any) -> ServeSettings:
        c = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
        batching = c.get("batching") or {}
        uri = c.get("model_uri")
        return cls(
            model_name=str(c["model_name"]),
            champion_alias=str(c["champion_alias"]),
            bento_model=str(c["bento_model"]),
            model_uri=str(uri) if uri not in (None, "", "null", "None") else None,
            host=str(c["host"]),
            port=int(c["port"]),
            workers=int(c["workers"]),
            timeout_s=int(c["timeout_s"]),
            max_request_mb=float(c["max_request_mb"]),
            max_file_mb=float(c["max_file_mb"]),
            api_key_env=str(c["api_key_env"]),
            max_batch_size=int(batching.get("max_batch_size", 64)),
            max_latency_ms=int(batching.get("max_latency_ms", 200)),
            bentoml_home=str(c["bentoml_home"]),
            radiomics_processes=int(c.get("radiomics_processes") or 0),
        )


def load_serve_settings(path: str | Path | None = None) -> ServeSettings:
    return ServeSettings.from_mapping(OmegaConf.load(Path(path) if path else settings_file()))


def bentoml_home(settings: ServeSettings, root: str | Path | None = None) -> Path:
    """BentoML's home as an absolute path (a relative one is taken from the checkout's root)."""
    home = Path(settings.bentoml_home)
    return home if home.is_absolute() else Path(root or repository_root()) / home
