"""MLflow conventions: store configuration, stage runs, parameter flattening."""

from cagerisk.tracking.runs import configure_tracking, dvc_lock_hashes, flatten_config, git_commit, stage_run

__all__ = ["configure_tracking", "dvc_lock_hashes", "flatten_config", "git_commit", "stage_run"]
