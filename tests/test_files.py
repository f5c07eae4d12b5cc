"""Atomic writes: the old file or the new one, never half of one; permissions kept; leftovers removed."""

import os
import stat

import pytest

from minibert.files import atomic_file, atomic_write_text, find_folder, remove_leftovers, replace_folder


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    for bits in (0o644, 0o600, 0o640):
        path = tmp_path / f"f{bits:o}.txt"
        path.write_text("old")
        os.chmod(path, bits)
        atomic_write_text(path, "new")
        assert path.read_text() == "new" and mode(path) == bits
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "fresh.txt", "x")
    finally:
        os.umask(umask)
    assert mode(tmp_path / "fresh.txt") == 0o644  # as open() would create it, not mkstemp's 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as f:
            f.write("half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_folders_are_swapped_whole_and_leftovers_removed(tmp_path):
    replace_folder(tmp_path / "last", lambda temp: (temp / "a").write_text("1"))
    with pytest.raises(ValueError):
        replace_folder(tmp_path / "last", lambda temp: ((temp / "a").write_text("2"), int("x")))
    assert (tmp_path / "last" / "a").read_text() == "1"
    (tmp_path / ".last.deadbeef.tmp").mkdir()  # what a killed process leaves
    (tmp_path / ".metrics.jsonl.0badc0de.tmp").write_text("half")
    removed = remove_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == [".last.deadbeef.tmp", ".metrics.jsonl.0badc0de.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_swap_deletes_only_what_it_created(tmp_path):
    (tmp_path / "last.old").mkdir()
    (tmp_path / "last.old" / "backup").write_text("mine")  # a user's backup beside the folder
    replace_folder(tmp_path / "last", lambda temp: (temp / "a").write_text("1"))
    replace_folder(tmp_path / "last", lambda temp: (temp / "a").write_text("2"))
    assert (tmp_path / "last.old" / "backup").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "last.old"]
    # A swap interrupted between its renames: the old side is found, and removed once the folder exists.
    os.replace(tmp_path / "last", tmp_path / ".last.0123abcd.old")
    assert find_folder(tmp_path / "last") == tmp_path / ".last.0123abcd.old"
    replace_folder(tmp_path / "last", lambda temp: (temp / "a").write_text("3"))
    assert [p.name for p in remove_leftovers(tmp_path)] == [".last.0123abcd.old"]
