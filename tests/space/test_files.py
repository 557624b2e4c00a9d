"""The one atomic writer (space.files): a reader finds the old file or the whole new one, never half, never a temp."""

from __future__ import annotations

import stat

import pytest

from space.files import write_atomically, written_atomically


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "entry.yaml"
    path.write_text("old\n")
    write_atomically(path, "new: 1\n")
    write_atomically(tmp_path / "front.png", b"\x89PNG")
    assert path.read_text() == "new: 1\n" and (tmp_path / "front.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.yaml", "front.png"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by whoever reads the folder, not mkstemp's 0600


def test_a_write_that_fails_halfway_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("the old space\n")
    with pytest.raises(OSError, match="No space left"):
        with written_atomically(path) as out:
            out.write("half of the new ")
            raise OSError(28, "No space left on device")  # what a full disk raises mid-write
    assert path.read_text() == "the old space\n"
    assert [p.name for p in tmp_path.iterdir()] == ["space.yaml"]
