"""The one atomic writer: all or nothing, stale temporaries cleaned, an unwritable cache tolerated."""

from __future__ import annotations

import os
import time

import pytest
import torch
from tiny import random_ids, tiny_pair

import boomerang as bm
from boomerang.io import atomic_dir, atomic_write, remove_stale_temporaries


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    dest = tmp_path / "r.csv"
    atomic_write(dest, "old\n")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError, match="No space"):
            atomic_write(dest, "new\n")
    assert dest.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]  # no temporary left behind
    atomic_write(dest, "new\n")
    assert dest.read_text() == "new\n"


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("killed half-way")
    assert (dest / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_stale_temporaries_of_killed_writers_are_removed_young_ones_kept(tmp_path):
    old_dir, young_dir = tmp_path / ".model.abc.tmp", tmp_path / ".model.def.tmp"
    old_file = tmp_path / ".r.csv.xyz.tmp"
    for d in (old_dir, young_dir):
        d.mkdir()
        (d / "weights").write_text("partial")
    old_file.write_text("partial")
    two_hours_ago = time.time() - 7200
    for p in (old_dir, old_file):
        os.utime(p, (two_hours_ago, two_hours_ago))
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "a").write_text("1")
    assert not old_dir.exists() and young_dir.exists() and old_file.exists()
    atomic_write(tmp_path / "r.csv", "x")
    assert not old_file.exists()
    assert remove_stale_temporaries(tmp_path) == []


def test_an_unwritable_cache_only_disables_caching(monkeypatch):
    monkeypatch.setenv("BOOMERANG_CACHE", "/proc/boomerang-no-cache")
    pair = tiny_pair("llama", 6)
    ids = random_ids(3, 10, seed=3)
    first = bm.sweep(pair, ["last-to-first"], data=ids)
    again = bm.sweep(pair, ["last-to-first"], data=ids)
    assert len(first) == pair.num_student_layers + 1 and torch.isfinite(torch.tensor(first.nll.values)).all()
    assert first.drop(columns="seconds").equals(again.drop(columns="seconds"))


def test_results_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        f = atomic_write(tmp_path / "r.csv", "x")
        with atomic_dir(tmp_path / "model") as d:
            (d / "a").write_text("1")
    finally:
        os.umask(mask)
    assert f.stat().st_mode & 0o777 == 0o644 and (tmp_path / "model").stat().st_mode & 0o777 == 0o755
