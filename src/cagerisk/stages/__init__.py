"""The stages: one module per command (``cagerisk <command>``), each a thin composition of library calls.

A stage module reads its typed config, calls a library function that returns a result object (no
files, no MLflow), writes that result atomically and logs it to MLflow. Only the Hydra entry points in
``pipelines/`` (and ``cagerisk.demo``) import a stage module; no stage imports another (import-linter
contracts in ``pyproject.toml``). See ``docs/architecture.md``.
"""
