"""`cagerisk radiomics` (DVC stage): PyRadiomics features of every ROI -> ${paths.features}/radiomics.parquet."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    configure_logging()
    from cagerisk.stages.radiomics import run_radiomics_stage

    run_radiomics_stage(cfg)


if __name__ == "__main__":
    main()
