"""Results are written so that an interrupted job never leaves a half-written file that looks finished,
and the plan files change (and so tell Snakemake to re-run) only when their content does."""
from __future__ import annotations

import os

import pytest

from warmstart.core.io import atomic_path, write_text_if_changed


def test_a_finished_write_replaces_the_file_in_one_step_with_the_users_permissions(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    old_umask = os.umask(0o027)
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and not target.exists()
            tmp.write_text("done")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "done"
    assert target.stat().st_mode & 0o777 == 0o640  # 0o666 under the umask, as for any file the user writes
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_temporary_name_left_by_a_crashed_writer_is_not_reused(tmp_path):
    target = tmp_path / "spec.json"
    stale = tmp_path / f".spec.json.{os.getpid()}.0.partial"
    stale.write_text("stale")
    with atomic_path(target) as tmp:
        assert tmp != stale
        tmp.write_text("new")
    assert target.read_text() == "new" and stale.read_text() == "stale"


def test_a_plan_file_is_rewritten_only_when_its_content_changes(tmp_path):
    path = tmp_path / "plan" / "streams" / "s.json"
    assert write_text_if_changed(path, "a")
    before = path.stat().st_mtime_ns
    assert not write_text_if_changed(path, "a") and path.stat().st_mtime_ns == before
    assert write_text_if_changed(path, "b") and path.read_text() == "b"
