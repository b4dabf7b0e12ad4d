"""DVC stage `segment`: train the CT vertebra U-Net, segment every patient, score Dice."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    configure_logging()
    from cagerisk.stages.segment import run_segment_stage

    return run_segment_stage(cfg)


if __name__ == "__main__":
    main()
