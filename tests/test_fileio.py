"""kws.fileio: atomic writes leave either the old file or the new one, never a temp file."""
import json
import os
import stat

import numpy as np
import pytest

from bnnkws.kws import fileio


def test_writes_bytes_text_json_with_plain_file_mode(tmp_path):
    a = fileio.atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01")
    b = fileio.atomic_write_text(tmp_path / "b.txt", "h\u00e9\n")
    c = fileio.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1.5]}, sort_keys=True)
    assert a.read_bytes() == b"\x00\x01"
    assert b.read_text(encoding="utf-8") == "h\u00e9\n"
    assert c.read_text() == json.dumps({"a": [1.5], "b": 1}, indent=2) + "\n"
    for p in (a, b, c):
        assert stat.S_IMODE(os.stat(p).st_mode) == fileio.FILE_MODE
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b.txt", "c.json", "sub"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "x.npy"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(target, fail, fsync=True)
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target, suffix=".tmp.npy") as tmp:
            np.save(tmp, np.zeros(3))
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_atomic_path_renames_library_output(tmp_path):
    target = tmp_path / "y.npy"
    with fileio.atomic_path(target, suffix=".tmp.npy", fsync=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.npy")
        np.save(tmp, np.arange(4))
    np.testing.assert_array_equal(np.load(target), np.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["y.npy"]
