import json

import pytest

from fatlib.io import atomic_path, write_json


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
