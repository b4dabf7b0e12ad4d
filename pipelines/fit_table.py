"""`cagerisk fit-table table=PATH id_col=ID label_col=LABEL positive_label=VALUE`: nested-CV selection and
classifier search on any CSV/Parquet feature table (conf/fit_table.yaml); the last stdout line is one JSON object."""

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="fit_table")
def main(cfg: DictConfig) -> None:
    configure_logging()
    from cagerisk.stages.fit_table import run_fit_table_stage

    summary = run_fit_table_stage(cfg)
    sys.stdout.flush()
    # The contract: the last stdout line is the result, as one JSON object.
    print(json.dumps(summary, default=str), flush=True)


if __name__ == "__main__":
    main()
