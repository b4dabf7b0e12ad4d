"""DVC stage `combined`: clinical analysis, clinical model and combined model -> ${paths.models}/combined."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    configure_logging()
    from cagerisk.stages.combined import run_combined_stage

    run_combined_stage(cfg)


if __name__ == "__main__":
    main()
