"""Network file systems (indexer.netfs): detection, and a whole run through a share with latency.

The share is benchmarks/fuse_delay.py: a real FUSE passthrough adding 1 ms per operation.
Skipped without /dev/fuse or the FUSE binding (mfusepy and libfuse3); with both, in CI, a
mount that fails is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from helpers import diff_dumps, dump_index, fresh_database, run_cli

from indexer.crawler import iter_files
from indexer.netfs import NETWORK_FS_TYPES, _read_mount_points, fs_type_of, is_network_path

DATA = Path(__file__).parent / "data"
FUSE_DELAY = Path(__file__).parent.parent / "benchmarks" / "fuse_delay.py"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def test_mount_table_gives_the_innermost_mount(tmp_path: Path) -> None:
    mounts = _read_mount_points()
    assert mounts, "no mount table"
    assert fs_type_of("/") == next(t for p, t in mounts if p == "/")
    proc = fs_type_of("/proc/self")
    assert proc == "proc"  # /proc is mounted inside /: the longer mount point wins
    assert not is_network_path("/proc/self") and not is_network_path(tmp_path)
    assert {"nfs", "nfs4", "cifs", "smb3", "9p"} <= NETWORK_FS_TYPES


def _fuse_delay() -> ModuleType:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as err:  # OSError: the binding finds no libfuse
        pytest.skip(f"no FUSE binding: {err}")
    spec = importlib.util.spec_from_file_location("fuse_delay", FUSE_DELAY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuse_delay"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def share(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """tests/data copied to local disk, and the same folder behind 1 ms per operation."""
    fuse_delay = _fuse_delay()
    source = tmp_path / "source"
    shutil.copytree(DATA, source)
    try:
        with fuse_delay.mounted(source, tmp_path / "share", delay_ms=1) as mnt:
            yield source, mnt
    except RuntimeError as err:
        if _in_ci():
            pytest.fail(f"/dev/fuse exists but the FUSE share cannot be mounted: {err}")
        pytest.skip(str(err))
    assert not os.path.ismount(tmp_path / "share")  # always unmounted


def _relative(dump: dict[str, list[tuple[object, ...]]], root: Path) -> dict[str, list[object]]:
    prefix = str(root)

    def rel(value: object) -> object:
        return value.replace(prefix, "ROOT") if isinstance(value, str) else value

    return {
        name: sorted((tuple(rel(v) for v in row) for row in rows), key=repr)
        for name, rows in dump.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_index_through_a_share_equals_local(
    share: tuple[Path, Path], tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    source, mnt = share
    assert is_network_path(mnt) and not is_network_path(source)
    local_files = [(os.path.relpath(f.path, source), f.size) for f in iter_files([source])]
    shared_files = [(os.path.relpath(f.path, mnt), f.size) for f in iter_files([mnt])]
    assert shared_files == local_files  # crawled with threads on the share, in the same order

    server = request.getfixturevalue("pg_url") if kind == "postgresql" else None
    with (
        fresh_database(kind, tmp_path / "db", server) as local_url,
        fresh_database(kind, tmp_path / "db", server) as shared_url,
    ):
        for root, url in ((source, local_url), (mnt, shared_url)):
            done = run_cli(["index", str(root), "--db", url, "--quiet"])
            assert done.returncode == 0, done.stderr
        local = _relative(dump_index(local_url), source)
        shared = _relative(dump_index(shared_url), mnt)
        assert shared == local, diff_dumps(shared, local)  # type: ignore[arg-type]
        assert len(local["elements"]) > 1000
