"""DVC stage `evaluate`: statistics, Table 1-2, Figs 1-3 -> ${paths.reports}/report.html, metrics.json."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    configure_logging()
    from cagerisk.stages.evaluate import run_evaluate_stage

    run_evaluate_stage(cfg)


if __name__ == "__main__":
    main()
