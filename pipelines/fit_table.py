"""`cagerisk fit-table table=PATH id_col=ID label_col=LABEL positive_label=VALUE`: nested-CV selection and
classifier search on any CSV/Parquet feature table; the last stdout line is one JSON object."""

import json
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging

# The root config plus the table's keys, so `table=...` needs no `+` (stage configs are unchanged).
ConfigStore.instance().store(
    name="fit_table",
    node={
        "defaults": ["config", "_self_"],
        "table": None,
        "id_col": "patient_id",
        "label_col": "cs",
        "positive_label": 1,
        "fit_table": {
            "kind": "radiomics",  # selection.<kind> steps
            "outer_folds": 5,
            "outer_repeats": 2,
            "inner_folds": 5,
            "n_trials": 30,  # Optuna trials per outer fold
            "include": None,  # classifiers; null = classifier.include
            "final_fit": True,  # also fit on all rows to report the selected features
            "drop_prefixes": ["diagnostics_"],  # PyRadiomics diagnostics are not features
            "drop_columns": [],
        },
    },
)


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="fit_table")
def main(cfg: DictConfig) -> None:
    configure_logging()
    from cagerisk.models.fit_table import run_fit_table

    summary = run_fit_table(cfg)
    sys.stdout.flush()
    # The contract: the last stdout line is the result, as one JSON object.
    print(json.dumps(summary, default=str), flush=True)


if __name__ == "__main__":
    main()
