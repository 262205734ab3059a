"""Output checks before the work (fatlib.preflight): the probe, free space, the file-size limit, and
OS errors as one line. The same through the command line: tests/test_hostile.py."""
from __future__ import annotations

import errno
import os

import pytest

from fatlib.errors import OutputError
from fatlib.preflight import check_writable, os_error_line


def test_a_writable_folder_passes_and_nothing_is_left(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert list(tmp_path.iterdir()) == []  # probed in the nearest existing parent, not created


def test_too_little_free_space_is_refused(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage
    monkeypatch.setattr("fatlib.preflight.shutil.disk_usage", lambda p: usage(p)._replace(free=1000))
    check_writable(tmp_path, expected_bytes=999)
    with pytest.raises(OutputError, match=rf"{tmp_path}: the --out folder needs about 2.0 KiB, .* 1000 bytes free"):
        check_writable(tmp_path, expected_bytes=2048, what="--out folder")


def test_a_file_size_limit_below_the_largest_file_is_refused(tmp_path):
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        check_writable(tmp_path, expected_bytes=10 << 20, largest_file_bytes=1 << 19)
        with pytest.raises(OutputError, match="file-size limit of 1.0 MiB"):
            check_writable(tmp_path, expected_bytes=10 << 20, largest_file_bytes=2 << 20)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
        with pytest.raises(OutputError, match="file too large"):  # the probe itself cannot be written
            check_writable(tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permission bits")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OutputError, match="ro: cannot write .*permission denied"):
        check_writable(tmp_path / "ro")


def test_a_path_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="f: not a folder"):
        check_writable(tmp_path / "f" / "sub")


def test_os_errors_name_the_target_and_the_fix(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".submission.csv.0a1b2c3d.tmp"))
    line = os_error_line(e)
    assert line.startswith(f"{tmp_path / 'submission.csv'}: cannot write: no space left") and "df -h" in line
    assert "ulimit -f unlimited" in os_error_line(OSError(errno.EFBIG, "File too large", "x"))
    assert "read-only file system" in os_error_line(OSError(errno.EROFS, "Read-only file system", "x"))
    assert os_error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "y")).startswith("y: No such")
