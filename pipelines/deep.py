"""DVC stage `deep`: fine-tune the ViT-3D on the training split and export deep features."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    configure_logging()
    from cagerisk.stages.deep import run_deep_stage

    return run_deep_stage(cfg)


if __name__ == "__main__":
    main()
