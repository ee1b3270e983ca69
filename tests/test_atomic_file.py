"""Replacing a file in one step: the new content lands whole under the name, a failed writer leaves the old file as
it was and no temporary file behind, and every writer's temporary file is its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.atomic_file import replaced_atomically, write_text_atomically


def test_the_new_content_replaces_the_old_and_nothing_else_is_left(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.json"  # missing directories are made
    write_text_atomically(path, "old")
    with replaced_atomically(path) as temporary:
        assert temporary.parent == path.parent and temporary != path
        temporary.write_bytes(b"new")
        assert path.read_text() == "old"  # nobody sees the new content before the block ends
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_failed_writer_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.safetensors"
    path.write_text("the last good checkpoint")

    class WriterError(RuntimeError):
        pass

    with pytest.raises(WriterError), replaced_atomically(path) as temporary:
        temporary.write_text("half of a checkpoint")
        raise WriterError
    assert path.read_text() == "the last good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_a_writer_that_writes_nothing_fails_without_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text("kept")
    with pytest.raises(FileNotFoundError), replaced_atomically(path, sync=False):
        pass  # no temporary file to rename: the old file stays
    assert path.read_text() == "kept"


def test_the_suffix_ends_the_temporary_name_and_writers_do_not_share_one(tmp_path: Path) -> None:
    path = tmp_path / "idm.onnx"
    with replaced_atomically(path, suffix=".onnx") as first, replaced_atomically(path, suffix=".onnx") as second:
        assert first.name.endswith(".onnx") and second.name.endswith(".onnx") and first != second
        first.write_text("first")
        second.write_text("second")
    assert path.read_text() == "first"  # the outer block ended last: its content is the file's


def test_a_privately_written_file_gets_the_mode_a_plain_open_would_give(tmp_path: Path) -> None:
    import os

    import numpy as np
    from safetensors.numpy import save_file

    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "weights.safetensors"
    with replaced_atomically(path) as temporary:
        save_file({"w": np.zeros(3)}, str(temporary))
        os.chmod(temporary, 0o600)  # as safetensors' own writer leaves it on some versions
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


@settings(max_examples=30, deadline=None)
@given(contents=st.lists(st.text(max_size=200), min_size=1, max_size=5), sync=st.booleans())
def test_after_any_sequence_of_writes_the_file_holds_the_last(tmp_path_factory, contents: list[str], sync) -> None:
    path = tmp_path_factory.mktemp("writes") / "held_command.json"
    for text in contents:
        write_text_atomically(path, text, sync=sync)
    assert path.read_bytes().decode("utf-8") == contents[-1]  # read_text would turn a "\r" into "\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]
