"""Durable file operations for publishing (write, copy, atomic replace, directory fsync), and the stamp by
which a file followed on disk (token files, certificates) is seen to change.

The registry's crash-safety rests on two facts this module provides: a file's bytes reach the disk before
the step that makes it visible (``fsync`` then ``rename``/``os.replace``), and the directory entry of a
rename is itself flushed (``fsync`` on the parent directory).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

__all__ = ["FileStamp", "copy_durable", "file_stamp", "fsync_dir", "replace_atomic", "write_durable"]

_CHUNK = 1 << 20

#: (inode, size, mtime in ns): differs after a rewrite in place or an atomic replace (a new inode).
FileStamp = tuple[int, int, int]


def file_stamp(path: Path) -> FileStamp | None:
    """The file's change stamp, or None when it cannot be read (missing, no permission)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def write_durable(path: Path, data: bytes) -> None:
    """Create or truncate ``path``, write ``data`` and fsync it before returning."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def copy_durable(src: Path, dst: Path) -> str:
    """Copy the bytes of ``src`` to ``dst`` (streamed), fsync ``dst``, and return the bytes' SHA-256 (hex).

    The hash is of exactly the bytes written, so it describes the copy even if ``src`` changes later.
    """
    digest = hashlib.sha256()
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush the entries of directory ``path`` (after a create or rename in it); no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def replace_atomic(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data``: readers see the old or the new content in full, never a torn write.

    Writes a hidden temp file beside ``path``, fsyncs it, ``os.replace``s it over ``path`` and fsyncs the
    directory. The temp file is removed if anything fails.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    try:
        write_durable(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
