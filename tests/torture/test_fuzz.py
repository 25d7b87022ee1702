"""Generated cases: mutants of real corpus files (bytes flipped, cut, inserted, deleted, lengths rewritten).

Two levels:

* the walker, under hypothesis (derandomized, so every run tries the same mutants):
  for each of thousands of mutants `read_file` must return a FileRecord or raise
  DicomReadError with a one-line reason, within a time bound, and the worker's row
  conversion must accept the record;
* the whole indexer: a few hundred mutants (from a fixed seed) next to the
  unmutated files, one `indexer index` run in a bounded subprocess: it ends with
  exit 0, every mutant has a files row with one of the four statuses and an errors
  row when it was not indexed, the row says what the walker says, and the
  unmutated files index exactly as a clean run over them alone.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import Dump, diff_dumps, query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.errors import DicomReadError
from indexer.reader import read_file
from indexer.records import ITEM, META, FileRecord
from indexer.rows import FailedFile
from indexer.worker import process_file

from .support import GOOD_FILES, PER_FILE_TABLES, copy_good, index_cli, relative_dump, restrict

pytestmark = [pytest.mark.corpus]

WALKER_EXAMPLES = 2500  # mutants tried by hypothesis (>= 2000)
INDEX_MUTANTS = 300  # mutants written into the tree of the index-level pass
PER_FILE_LIMIT_S = 10.0  # a mutant that takes longer than this to walk is a hang
SEED_MAX_BYTES = 60_000
KNOWN_REASONS = {"not_dicom", "empty", "unreadable", "invalid", "truncated"}
LENGTHS = [0, 1, 2, 3, 7, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFE, 0xFFFFFFFF]


class Seed:
    """An unmutated corpus file and where its length fields are (from the walker's records)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data
        self.lengths: list[
            tuple[int, int, str]
        ] = []  # (byte offset, width, byte order) of each length field
        record = read_file(_write_temp(data))
        for r in record.elements:
            meta = bool(r.flags & META)
            if record.deflated and not meta:
                continue  # offsets in the inflated stream: no place in the file
            order = "<" if meta or record.little_endian else ">"
            if r.flags & ITEM or not r.vr or (not record.explicit_vr and not meta):
                self.lengths.append((r.offset + 4, 4, order))
            elif r.vr in (
                "OB",
                "OD",
                "OF",
                "OL",
                "OV",
                "OW",
                "SQ",
                "SV",
                "UC",
                "UN",
                "UR",
                "UT",
                "UV",
            ):
                self.lengths.append((r.offset + 8, 4, order))
            else:
                self.lengths.append((r.offset + 6, 2, order))
        self.lengths = [x for x in self.lengths if x[0] + x[1] <= len(data)]


_TEMP = Path(tempfile.mkdtemp(prefix="torture-fuzz-"))
atexit.register(shutil.rmtree, _TEMP, True)


def _write_temp(data: bytes, name: str = "mutant.dcm") -> Path:
    path = _TEMP / name
    path.write_bytes(data)
    return path


def mutate(seed: Seed, ops: list[tuple[Any, ...]]) -> bytes:
    """Apply mutation operations; positions are taken modulo the current size."""
    data = bytearray(seed.data)
    for op in ops:
        kind = op[0]
        size = max(len(data), 1)
        if kind == "flip":
            _, pos, mask = op
            if data:
                data[pos % size] ^= mask
        elif kind == "cut":
            del data[op[1] % size :]
        elif kind == "insert":
            _, pos, chunk = op
            data[pos % size : pos % size] = chunk
        elif kind == "delete":
            _, pos, count = op
            del data[pos % size : pos % size + count]
        elif kind == "duplicate":
            _, pos, count = op
            data[pos % size : pos % size] = data[pos % size : pos % size + count]
        elif kind == "length":
            _, which, value = op
            if seed.lengths:
                offset, width, order = seed.lengths[which % len(seed.lengths)]
                if offset + width <= len(data):
                    fmt = order + ("H" if width == 2 else "I")
                    struct.pack_into(
                        fmt, data, offset, value & (0xFFFF if width == 2 else 0xFFFFFFFF)
                    )
    return bytes(data)


POSITIONS = st.integers(0, 2**31 - 1)
OPERATIONS = st.one_of(
    st.tuples(st.just("flip"), POSITIONS, st.integers(1, 255)),
    st.tuples(st.just("cut"), POSITIONS),
    st.tuples(st.just("insert"), POSITIONS, st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("delete"), POSITIONS, st.integers(1, 64)),
    st.tuples(st.just("duplicate"), POSITIONS, st.integers(1, 64)),
    st.tuples(
        st.just("length"), POSITIONS, st.one_of(st.sampled_from(LENGTHS), st.integers(0, 2**32 - 1))
    ),
)


def random_operations(rng: random.Random) -> list[tuple[Any, ...]]:
    """The index-level pass's mutations: the same operations, from a seeded generator."""
    ops: list[tuple[Any, ...]] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(
            ["flip", "flip", "cut", "insert", "delete", "duplicate", "length", "length", "length"]
        )
        pos = rng.randrange(2**31)
        if kind == "flip":
            ops.append((kind, pos, rng.randint(1, 255)))
        elif kind == "cut":
            ops.append((kind, pos))
        elif kind == "insert":
            ops.append((kind, pos, rng.randbytes(rng.randint(1, 12))))
        elif kind in ("delete", "duplicate"):
            ops.append((kind, pos, rng.randint(1, 64)))
        else:
            ops.append(
                (kind, pos, rng.choice(LENGTHS) if rng.random() < 0.6 else rng.randrange(2**32))
            )
    return ops


@pytest.fixture(scope="module")
def seeds(corpus_dir: Path) -> list[Seed]:
    chosen = [n for n in GOOD_FILES if (corpus_dir / n).stat().st_size <= SEED_MAX_BYTES]
    return [Seed(n, (corpus_dir / n).read_bytes()) for n in chosen]


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def fire(_signum: int, _frame: Any) -> None:
        raise Hang(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def walk_outcome(path: Path) -> tuple[str, FileRecord | DicomReadError]:
    """'indexed', 'partial' or 'failed', with the record or the error; anything else raises."""
    with time_limit(PER_FILE_LIMIT_S):
        try:
            record = read_file(path)
        except DicomReadError as err:
            return "failed", err
    return ("indexed" if record.problem is None else "partial"), record


def _check_record(record: FileRecord, size: int, path: Path) -> None:
    counted = sum(1 for r in record.elements if not r.flags & (META | ITEM))
    assert record.element_count == counted
    assert record.problem is None or (record.problem.strip() and "\n" not in record.problem)
    for r in record.elements:
        # offsets count in the inflated stream of a deflated file
        assert 0 <= r.offset < (size if not record.deflated else 2**40), r
        assert r.value is None or isinstance(r.value, str)
    # The worker's whole step (read, walk, rows) must take it too, without a "walker_failure".
    outcome = process_file(str(path), size, 0)
    assert not (isinstance(outcome, FailedFile) and outcome.reason == "walker_failure"), outcome


@pytest.mark.slow
def test_walker_survives_mutants(seeds: list[Seed]) -> None:
    outcomes: Counter[str] = Counter()
    seed_names = st.sampled_from(range(len(seeds)))

    @settings(
        max_examples=WALKER_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=timedelta(seconds=5),
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(which=seed_names, ops=st.lists(OPERATIONS, min_size=1, max_size=4))
    def check(which: int, ops: list[tuple[Any, ...]]) -> None:
        seed = seeds[which]
        data = mutate(seed, ops)
        path = _write_temp(data)
        kind, result = walk_outcome(path)
        outcomes[kind] += 1
        if isinstance(result, DicomReadError):
            assert result.reason in KNOWN_REASONS, result.reason
            assert result.detail.strip() and "\n" not in result.detail, result.detail
        else:
            _check_record(result, len(data), path)

    check()
    # The mutants must really exercise every outcome, or the test proves nothing.
    assert sum(outcomes.values()) >= 2000, outcomes
    assert min(outcomes[k] for k in ("indexed", "partial", "failed")) >= 50, outcomes


# -- index level ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mutant_tree(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, seeds: list[Seed]
) -> tuple[Path, dict[str, tuple[str, int | None]]]:
    """good/ (unmutated files) and mutants/ (INDEX_MUTANTS files), with each mutant's walker outcome."""
    root = tmp_path_factory.mktemp("fuzz-index")
    copy_good(corpus_dir, root / "good")
    (root / "mutants").mkdir()
    rng = random.Random(5_000_001)
    expected: dict[str, tuple[str, int | None]] = {}
    for i in range(INDEX_MUTANTS):
        seed = seeds[i % len(seeds)]
        name = f"{i:04d}_{os.path.basename(seed.name)}"
        if not name.endswith(".dcm"):
            name += ".dcm"  # named like DICOM: an unreadable mutant is an error, not a skip
        path = root / "mutants" / name
        path.write_bytes(mutate(seed, random_operations(rng)))
        kind, result = walk_outcome(path)
        expected[str(path)] = (
            kind,
            result.element_count if isinstance(result, FileRecord) else None,
        )
    return root, expected


@pytest.mark.slow
def test_index_run_over_mutants(
    kind: str,
    db: str,
    mutant_tree: tuple[Path, dict[str, tuple[str, int | None]]],
    good_reference: Dump,
) -> None:
    root, expected = mutant_tree
    kinds = Counter(k for k, _ in expected.values())
    assert min(kinds[k] for k in ("indexed", "partial", "failed")) >= 10, kinds  # a varied set

    ran = index_cli([root], db, "-q", timeout=240)
    assert ran.returncode == 0, ran.describe()
    assert "Traceback" not in ran.stderr, ran.stderr

    rows = {r[0]: r for r in query(db, "SELECT path, status, element_count FROM files")}
    failed = {r[0] for r in query(db, "SELECT path FROM errors WHERE severity = 'error'")}
    messages = query(db, "SELECT path, reason, message FROM errors")
    wrong = []
    for path, (walked, count) in sorted(expected.items()):
        row = rows.get(path)
        if row is None:
            wrong.append(f"{path}: no files row")
            continue
        status = row[1]
        want = {"indexed": {"indexed"}, "partial": {"partial"}, "failed": {"error", "not_dicom"}}[
            walked
        ]
        if status not in want:
            wrong.append(f"{path}: status {status}, the walker says {walked}")
        if status != "indexed" and path not in failed:
            wrong.append(f"{path}: status {status} but no errors row")
        if walked != "failed" and row[2] != count:
            wrong.append(f"{path}: element_count {row[2]}, the walker counts {count}")
    assert not wrong, f"{len(wrong)} of {len(expected)} mutants:\n" + "\n".join(wrong[:40])
    bad_messages = [m for m in messages if not m[2].strip() or "\n" in m[2] or not m[1]]
    assert not bad_messages, bad_messages[:10]

    # The unmutated files: every row of their own exactly as in a clean run over them alone.
    def keep(p: Any) -> bool:
        return isinstance(p, str) and p.startswith("good/")

    actual = relative_dump(db, root)
    assert diff_dumps(restrict(good_reference, keep), restrict(actual, keep)) == "", PER_FILE_TABLES
