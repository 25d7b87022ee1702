"""Security: private database files, a read-only `indexer sql`, no patient values in output,
and paths with shell or SQL metacharacters kept verbatim.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from helpers import INDEXER_BIN, diff_dumps, dump_index, fresh_database, query

from indexer.run import index_paths

from .build import dicom_file, el, identity, meta, uid_for
from .support import GOOD_FILES, cli, copy_good, index_cli, indexer, kill_group

pytestmark = [pytest.mark.corpus]


# -- file modes -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
def test_sqlite_file_wal_and_scratch_are_private(
    kind: str, tmp_path: Path, corpus_dir: Path
) -> None:
    """With the most permissive umask, every file the run creates is readable by its owner only."""
    tree = tmp_path / "tree"
    for i in range(3):
        copy_good(corpus_dir, tree / str(i))
    db_path = tmp_path / "out" / "index.db"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    os.chmod(scratch, 0o777)
    proc = subprocess.Popen(
        [str(INDEXER_BIN), "index", str(tree), "--db", str(db_path), "-w", "2", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=0,
        env={**os.environ, "TMPDIR": str(scratch)},
        start_new_session=True,
    )
    seen: dict[str, set[int]] = {}
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            candidates = [
                db_path,
                Path(f"{db_path}-wal"),
                Path(f"{db_path}-shm"),
                Path(f"{db_path}-journal"),
            ]
            for folder, dirs, names in os.walk(scratch):
                candidates += [Path(folder, n) for n in dirs + names]
            for path in candidates:
                try:
                    mode = stat.S_IMODE(os.stat(path).st_mode)
                except FileNotFoundError:
                    continue
                seen.setdefault(str(path).replace(str(scratch), "$TMPDIR"), set()).add(mode)
            time.sleep(0.01)
        _out, err = proc.communicate(timeout=5)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, err
    assert f"{db_path}-wal" in seen, f"the WAL was never seen: {sorted(seen)}"
    loose = {
        p: sorted(oct(m) for m in modes)
        for p, modes in seen.items()
        if any(m & 0o077 for m in modes)
    }
    assert loose == {}, f"files or folders readable by others: {loose}"
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


# -- indexer sql cannot write -------------------------------------------------------------------

WRITES = {
    "update": "UPDATE files SET status = 'hacked'",
    "delete": "DELETE FROM files",
    "insert": "INSERT INTO runs (started_at, roots, options, host, pid, outcome) VALUES (0, '', '', '', 0, 'x')",
    "drop": "DROP TABLE elements",
    "multi_statement": "SELECT 1; DELETE FROM files",
    "multi_statement_values": "VALUES (1); DROP TABLE files",
    "injection_after_comment": "SELECT path FROM files WHERE path = ''; DELETE FROM files; --'",
    "comment_first": "/* harmless */ DELETE FROM files",
    "line_comment_first": "-- just a select\nDELETE FROM files",
    "cte_delete": "WITH gone AS (DELETE FROM files RETURNING path) SELECT * FROM gone",
    "explain_analyze_delete": "EXPLAIN ANALYZE DELETE FROM files",
    "select_into": "SELECT * INTO stolen FROM files",
    "attach": "ATTACH DATABASE '{attached}' AS other",
    "attach_then_write": "ATTACH DATABASE '{attached}' AS other; CREATE TABLE other.t (x)",
    "pragma_then_write": "PRAGMA query_only = OFF; DELETE FROM files",
    "vacuum_into": "VACUUM INTO '{attached}'",
    "transaction_read_write": "SET TRANSACTION READ WRITE; DELETE FROM files",
    "commit_then_delete": "COMMIT; DELETE FROM files",
    "lo_import": "SELECT lo_import('/etc/hostname')",
    "set_config": "SELECT set_config('default_transaction_read_only', 'off', false), (SELECT count(*) FROM files)",
}


@pytest.fixture(scope="module")
def shared_indexes(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path
) -> Iterator[Callable[[str, str | None], str]]:
    """One small index per database kind, shared by the module's read-only tests."""
    stack = ExitStack()
    made: dict[str, str] = {}

    def get(kind: str, server: str | None) -> str:
        if kind not in made:
            url = stack.enter_context(
                fresh_database(kind, tmp_path_factory.mktemp("sql-db"), server)
            )
            tree = tmp_path_factory.mktemp("sql-tree")
            copy_good(corpus_dir, tree, GOOD_FILES[:5])
            index_paths([tree], url, workers=0)
            made[kind] = url
        return made[kind]

    with stack:
        yield get


@pytest.fixture
def small_index(
    kind: str, request: pytest.FixtureRequest, shared_indexes: Callable[[str, str | None], str]
) -> str:
    return shared_indexes(kind, request.getfixturevalue("pg_url") if kind == "postgresql" else None)


@pytest.mark.parametrize("attempt", sorted(WRITES))
def test_sql_cannot_write(kind: str, small_index: str, tmp_path: Path, attempt: str) -> None:
    before = dump_index(small_index)
    attached = tmp_path / "attached.db"
    statement = WRITES[attempt].format(attached=attached)
    ran = cli("sql", "--db", small_index, "--", statement)  # `--`: a statement may start with "--"
    after = dump_index(small_index)
    assert diff_dumps(before, after) == "", f"{attempt}: the index changed"
    assert not attached.exists(), f"{attempt}: a database file was created"
    if kind == "postgresql":
        # nothing outside the dumped tables either (a large object is a write, too)
        assert query(small_index, "SELECT COUNT(*) FROM pg_largeobject_metadata") == [(0,)], attempt
        assert query(
            small_index,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'stolen'",
        ) == [(0,)]
    if attempt in ("set_config", "lo_import") and ran.returncode == 0:
        # ran inside a read-only transaction that was rolled back: nothing was kept (checked above)
        return
    assert ran.returncode != 0, f"{attempt}: accepted: {ran.describe()}"
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("warning: ")]  # as a superuser
    assert len(lines) == 1 and "Traceback" not in ran.stderr, f"{attempt}: {ran.stderr!r}"
    assert query(small_index, "SELECT COUNT(*) FROM files") == [
        (5,)
    ]  # the tables are all still there


# -- no patient values in output -----------------------------------------------------------------

SECRET = "ZQXSECRET"


def _secret_files(folder: Path) -> None:
    """Files whose patient values are distinctive strings: sound, broken and odd ones."""
    folder.mkdir(parents=True)
    name = f"{SECRET}NAME^JANE".encode()
    pid = f"{SECRET}ID42".encode()
    extra = [
        (0x00101040, el(0x00101040, "LO", f"{SECRET}ADDRESS".encode())),
        (0x00101000, el(0x00101000, "LO", f"{SECRET}OTHERID".encode())),
        (0x00100030, el(0x00100030, "DA", b"19011231")),
    ]
    whole = dicom_file("secret-ok", patient_name=name, patient_id=pid, extra=extra)
    (folder / "ok.dcm").write_bytes(whole)
    # cut in the middle of the Patient's Name value
    cut_at = whole.index(name) + 5
    (folder / "cut_in_name.dcm").write_bytes(whole[:cut_at])
    # Patient's Name with a length past the end of the file
    (folder / "name_length_lies.dcm").write_bytes(
        meta(uid_for("secret2/sop"))
        + identity("secret2", patient_name=name, patient_id=pid)[:0]
        + el(0x00080016, "UI", b"1.2.3")
        + el(0x00100010, "PN", name, length=0xFFF0)
    )
    # invalid VR on Patient ID, and a 4 GB length on an element after it
    (folder / "bad_vr.dcm").write_bytes(
        dicom_file(
            "secret3",
            patient_name=name,
            extra=[(0x00100020, el(0x00100020, "LO", pid, raw_vr=b"ZZ"))],
        )
    )
    (folder / "huge_length.dcm").write_bytes(
        dicom_file(
            "secret4",
            patient_name=name,
            patient_id=pid,
            extra=[
                (0x00104000, el(0x00104000, "UT", f"{SECRET}COMMENT".encode(), length=0xFFFFFFF0))
            ],
        )
    )
    # undecodable bytes in a patient value, under a charset that cannot decode them
    (folder / "charset.dcm").write_bytes(
        dicom_file(
            "secret5",
            patient_name=name + b"\xff\xfe\x1b$B",
            patient_id=pid,
            charset=b"ISO 2022 IR 87",
        )
    )
    # an unknown Specific Character Set (pydicom warns about it: the warning must not carry values)
    (folder / "charset_unknown.dcm").write_bytes(
        dicom_file(
            "secret6", patient_name=name + b"\xe9\xff", patient_id=pid, charset=b"BOGUS CHARSET"
        )
    )
    # patient values inside a broken meta header
    (folder / "meta_broken.dcm").write_bytes(
        meta(uid_for("secret7/sop"))[:-6]
        + el(0x00020016, "AE", f"{SECRET}AE".encode(), length=0xFFF0)
    )
    # no meta, implicit VR, the name first
    (folder / "bare_implicit").write_bytes(
        b"\x08\x00\x16\x00\x06\x00\x00\x001.2.3\x00"
        + b"\x10\x00\x10\x00"
        + (len(name) + 1).to_bytes(4, "little")
        + name
        + b" "
        + b"\x10\x00\x20\x00\xf0\xff\xff\xff"
        + pid
    )
    (folder / "not_dicom.dcm").write_bytes(f"{SECRET}TEXT file named .dcm\n".encode())


def test_no_patient_values_in_output(kind: str, db: str, tmp_path: Path) -> None:
    _secret_files(tmp_path / "tree")
    outputs: dict[str, str] = {}
    for label, args in {
        "index": ["index", str(tmp_path / "tree"), "--db", db, "-w", "2"],
        "index json": ["index", str(tmp_path / "tree"), "--db", db, "-w", "2", "-f", "json"],
        "index again": ["index", str(tmp_path / "tree"), "--db", db, "-w", "0", "--prune"],
        "stats": ["stats", "--db", db],
        "stats json": ["stats", "--db", db, "-f", "json"],
        "tags": ["tags", "--db", db],
        "tags json": ["tags", "--db", db, "-f", "json"],
        "tags name": ["tags", "--db", db, "--tag", "PatientName"],
        "tags id": ["tags", "--db", db, "--tag", "(0010,0020)"],
        "tags address": ["tags", "--db", db, "--tag", "PatientAddress"],
        "db current": ["db", "current", "--db", db],
    }.items():
        # the index runs as a process (its workers' output too); the readers in this process
        ran = indexer(*args, timeout=120) if args[0] == "index" else cli(*args)
        assert ran.returncode in (0, 2), f"{label}: {ran.describe()}"
        outputs[label] = ran.output
    leaks = {
        label: [line for line in out.splitlines() if SECRET in line]
        for label, out in outputs.items()
    }
    leaks = {k: v for k, v in leaks.items() if v}
    assert leaks == {}, f"patient values printed: {leaks}"
    # ... nor in the recorded error messages
    recorded = query(db, "SELECT path, reason, message FROM errors")
    assert recorded, "the broken files must have been recorded"
    leaked = [r for r in recorded if SECRET in r[2]]
    assert leaked == [], leaked
    # Asked for on purpose, they are there (the test can see a leak at all).
    ran = cli("tags", "--db", db, "--tag", "PatientName", "--patient-values")
    assert f"{SECRET}NAME" in ran.output, ran.describe()


# -- shell and SQL metacharacters in paths ----------------------------------------------------------

ODD_NAMES = [
    'it\'s "quoted".dcm',
    "semi;colon && $(touch pwned) | cat `touch pwned2`.dcm",
    "Robert'); DROP TABLE files;--.dcm",
    "percent%_under_\\back.dcm",
    "-rf --db x.dcm",
    "$HOME ${PATH} *.dcm",
    "ünïcödé ∑ 雪.dcm",
    "tab\there.dcm",
]


def test_paths_with_metacharacters_are_stored_and_printed_verbatim(
    kind: str, db: str, tmp_path: Path, corpus_dir: Path
) -> None:
    tree = tmp_path / "tree" / "a'b; DROP TABLE x;--$(id)"
    tree.mkdir(parents=True)
    sample = (corpus_dir / "pydicom/rtplan.dcm").read_bytes()
    expected = []
    for name in ODD_NAMES:
        (tree / name).write_bytes(sample)
        expected.append(str(tree / name))
    (tree / "broken ';--.dcm").write_bytes(b"not dicom at all")
    ran = index_cli([tmp_path / "tree"], db, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.describe()
    assert not list(tmp_path.rglob("pwned*")), "a shell ran part of a file name"

    stored = sorted(p for (p,) in query(db, "SELECT path FROM files WHERE status = 'indexed'"))
    assert stored == sorted(expected)
    assert query(db, "SELECT path FROM errors") == [(str(tree / "broken ';--.dcm"),)]

    ran = cli("sql", "SELECT path FROM files ORDER BY path", "--db", db, "-f", "json")
    assert ran.returncode == 0, ran.describe()
    assert sorted(r["path"] for r in json.loads(ran.stdout)) == sorted(
        expected + [str(tree / "broken ';--.dcm")]
    )
    ran = cli("sql", "SELECT path FROM files ORDER BY path", "--db", db, "-f", "csv")
    assert ran.returncode == 0, ran.describe()
    printed = [row[0] for row in list(csv.reader(io.StringIO(ran.stdout)))[1:]]
    assert sorted(printed) == sorted(expected + [str(tree / "broken ';--.dcm")])
    # The table (cells are cut at a width, so the names only, the folder quoted in the SQL)
    prefix = str(tree).replace("'", "''") + "/"
    ran = cli(
        "sql", f"SELECT replace(path, '{prefix}', '') AS name FROM files ORDER BY path", "--db", db
    )
    assert ran.returncode == 0, ran.describe()
    for name in ODD_NAMES:
        if "\t" not in name:  # a table shows a tab as an escape, on purpose
            assert name in ran.stdout.splitlines()[2:] or any(
                line.strip() == name for line in ran.stdout.splitlines()
            ), f"{name!r} not printed verbatim:\n{ran.stdout}"
    ran = cli("find", "instances", "--db", db, "-f", "json")
    assert ran.returncode == 0, ran.describe()
    assert sorted(v for r in json.loads(ran.stdout) for k, v in r.items() if "path" in k) == sorted(
        expected
    )
    assert query(db, "SELECT COUNT(*) FROM files") == [(len(ODD_NAMES) + 1,)]
