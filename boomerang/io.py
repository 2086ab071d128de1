"""Write files and folders all at once: build beside the destination, then rename into place.

A rename within one filesystem is atomic, so a reader (or a process killed half-way through a
save) sees either the old content or the complete new one, never a half-written checkpoint, a
0-byte CSV after a full disk, or a truncated JSON file. Every write of a result in boomerang goes
through :func:`atomic_dir` or :func:`atomic_write`. Temporary names start with ``.`` and end in
``.tmp``, so :func:`remove_stale_temporaries` can clean up after a killed process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Temporaries older than this (seconds) belong to a process that died; younger ones may be live.
STALE_AFTER_S = 3600.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``dest`` (which may exist).

    An existing ``dest`` is first renamed aside, so at every instant either the old or the new
    folder is complete on disk; on an exception ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest.parent, prefix=f".{dest.name}.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the finished folder ``src`` to ``dest`` (same filesystem), replacing any old ``dest``.

    The old folder is renamed aside first and deleted last, so at every instant one complete
    folder is on disk under ``dest`` or beside it.
    """
    src, dest = Path(src), Path(dest)
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", suffix=".tmp", dir=dest.parent))
        old.rmdir()
        dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dest)


def atomic_write(dest: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to the file ``dest`` all at once (fsynced before the rename)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest.parent, prefix=f".{dest.name}.")
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.chmod(name, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode(encoding) if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, dest)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return dest


def remove_stale_temporaries(folder: str | os.PathLike, prefix: str = ".",
                             older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete this module's temporaries (``prefix*.tmp``) in ``folder`` that a killed process
    left behind more than ``older_than_s`` ago (younger ones may belong to a live writer)."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(f"{prefix}*.tmp"):
        try:
            if now - p.stat().st_mtime < older_than_s:
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed
