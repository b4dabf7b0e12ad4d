"""write_text_atomic: the whole text or the old file, never half of it; no temporary left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cagerisk.atomic import write_text_atomic


def test_writes_creates_folders_and_replaces(tmp_path: Path):
    target = tmp_path / "a" / "b" / "metrics.json"
    assert write_text_atomic('{"auc": 0.9}\n', target) == target
    assert target.read_text(encoding="utf-8") == '{"auc": 0.9}\n'
    write_text_atomic("é\n", target)
    assert target.read_text(encoding="utf-8") == "é\n"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "summary.json"
    target.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic("new\n", target)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
