"""``cagerisk <stage> [hydra overrides]``: one console script for every stage.

Each stage is a Hydra app in ``pipelines/<stage>.py`` composed from ``conf/``; this entry point
only picks the stage and hands the remaining arguments to Hydra.
"""

from __future__ import annotations

import importlib
import sys

# stage name -> module under pipelines/ (stages are added here as they come)
STAGES: dict[str, str] = {
    "cohort": "pipelines.cohort",
    "segment": "pipelines.segment",
    "radiomics": "pipelines.radiomics",
    "deep": "pipelines.deep",
    "reproducibility": "pipelines.reproducibility",
    "signatures": "pipelines.signatures",
    "combined": "pipelines.combined",
    "evaluate": "pipelines.evaluate",
    "fit-table": "pipelines.fit_table",
    "register": "pipelines.register",
}

USAGE = "usage: cagerisk <stage> [hydra overrides...]\n\nstages:\n" + "\n".join(f"  {name}" for name in STAGES)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        sys.exit(0 if argv else 2)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"cagerisk: unknown stage {stage!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(STAGES[stage])
    # Hydra parses sys.argv itself; the program name shows in its --help.
    sys.argv = [f"cagerisk {stage}", *rest]
    module.main()


if __name__ == "__main__":
    main()
