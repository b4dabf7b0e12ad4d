"""`cagerisk cohort`: synthetic or real cohort -> manifest, label map, splits, Table 1."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging
from cagerisk.stages.cohort import run_cohort_stage


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    configure_logging()
    run_cohort_stage(cfg)


if __name__ == "__main__":
    main()
