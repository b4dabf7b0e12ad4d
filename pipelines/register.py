"""`cagerisk register`: log the serving model, register it, give it the champion or challenger alias."""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cagerisk.logging_setup import configure_logging
from cagerisk.stages.register import run_register_stage


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    configure_logging()
    result = run_register_stage(cfg)
    # Last line: the decision as JSON, for scripts (make demo reads it).
    print(json.dumps(result.as_dict(), default=str))


if __name__ == "__main__":
    main()
