"""Per-ROI result cache under ``{paths.cache}/radiomics/``.

One JSON file per ROI, keyed by (patient, sequence, ROI, image hash, mask hash, ROI label values,
settings hash). JSON because Python writes floats with ``repr``, which reads back bit for bit, and a
file per ROI because a run killed part-way must keep every ROI finished before the kill: each file is
written to a temporary name and moved into place with ``os.replace`` (atomic on POSIX), so a reader
sees either no file or a complete one. Entries of other settings stay, so switching back is free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cagerisk.radiomics.extract import RoiTask

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20
_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (of every file, sorted, for a DICOM folder); memoised on (path, size, mtime)."""
    p = Path(path)
    stat = p.stat()  # FileNotFoundError names the path
    memo_key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if memo_key in _hash_memo:
            return _hash_memo[memo_key]
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_memo[memo_key] = value
    return value


def roi_cache_key(task: RoiTask) -> str:
    payload = {
        "patient_id": task.patient_id,
        "sequence": task.sequence,
        "roi": task.roi,
        "image_sha256": task.image_sha256,
        "mask_sha256": task.mask_sha256,
        "label_values": list(task.label_values),
        "settings_sha256": task.settings_sha256,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


class RadiomicsCache:
    """Finished ROIs on disk; safe for one writer per key and any number of readers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by writers that were killed mid-write (their process is gone)."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for tmp in self.root.glob("*/.*.tmp"):
            try:
                pid = int(tmp.name.split(".")[-3])
            except (ValueError, IndexError):
                continue
            if not _pid_alive(pid):
                tmp.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d temporary file(s) of killed radiomics runs from %s", removed, self.root)
        return removed

    def path(self, task: RoiTask) -> Path:
        key = roi_cache_key(task)
        return self.root / f"{_safe(task.sequence)}_{_safe(task.roi)}" / f"{_safe(task.patient_id)}-{key[:32]}.json"

    def load(self, task: RoiTask) -> dict[str, float] | None:
        """The cached features of a task, or None (absent, unreadable or written for another key)."""
        path = self.path(task)
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            # A damaged entry (disk full, manual edit) is recomputed, not trusted.
            log.warning("radiomics cache entry %s unreadable (%s); recomputing %s", path, err, task.name)
            return None
        if entry.get("key") != roi_cache_key(task) or not isinstance(entry.get("features"), dict):
            log.warning("radiomics cache entry %s does not match %s; recomputing", path, task.name)
            return None
        return {k: float(v) for k, v in entry["features"].items()}

    def store(self, task: RoiTask, features: Mapping[str, float], extra: Mapping[str, Any] | None = None) -> Path:
        """Write atomically: a temporary file in the same folder, then ``os.replace``."""
        path = self.path(task)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "key": roi_cache_key(task),
            "patient_id": task.patient_id,
            "sequence": task.sequence,
            "roi": task.roi,
            "image": task.image,
            "mask": task.mask,
            "image_sha256": task.image_sha256,
            "mask_sha256": task.mask_sha256,
            "label_values": list(task.label_values),
            "settings_sha256": task.settings_sha256,
            **(dict(extra) if extra else {}),
            "features": {k: float(v) for k, v in features.items()},
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "w") as fh:
                json.dump(entry, fh)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
