import json

import pytest

from fatlib.atomic import atomic_path, write_json


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "m.json"
    write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}


def test_interrupted_write_keeps_old_file_and_no_temp(tmp_path):
    p = tmp_path / "m.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["m.txt"]


def test_new_file_gets_the_usual_mode_and_a_replaced_one_keeps_its_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = tmp_path / "new.json"
        write_json(p, {"a": 1})
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        q = tmp_path / "old.txt"
        q.write_text("x")
        q.chmod(0o640)
        write_json(q, {"b": 2})
        assert stat.S_IMODE(q.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_failed_write_names_the_target(tmp_path):
    import errno

    p = tmp_path / "m.txt"
    with pytest.raises(OSError) as err:
        with atomic_path(p):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.filename == str(p)
    assert not p.exists() and not list(tmp_path.iterdir())
