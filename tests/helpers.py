"""Helpers shared by the index tests: canonical dumps of an index, databases, file trees.

The canonical dump (`dump_index`) is what the incremental and crash tests compare:
every table of the index, each row written without the database's own numbers
(autoincrement ids, run ids, timestamps). Rows that point at other rows by id are
rewritten to point at them by natural key instead: an element by its file's path
and its sequence path, an instance by its file's path and its series UID, a study
by its patient's (Patient ID, issuer), and so on. Two indexes of the same files
therefore dump equal however the rows were numbered, batched, interrupted or
re-written, and a difference shows which table and which rows differ.
"""

from __future__ import annotations

import fcntl
import os
import pty
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import termios
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from indexer import schema
from indexer.records import ITEM, META

Row = tuple[Any, ...]
Dump = dict[str, list[Row]]

INDEXER_BIN = Path(sys.executable).with_name("indexer")

# Columns left out of the dump: ids and what records a run rather than the content.
_VOLATILE = {
    "files": {"id", "first_run", "last_run", "indexed_at"},
    "errors": {"id", "run_id", "at"},
}
# Dictionaries that a re-index or a prune may leave larger than a fresh index would make them
# (entries are shared between files and never counted down): sequence paths, and the tag keys,
# their paths and the usage groups of the summaries. Every other table must match exactly.
DICTIONARY_TABLES = frozenset({"paths", "path_keys", "tag_keys", "usage_groups"})
# The tables indexer/summaries/ keeps (schema.py, the summaries section).
SUMMARY_TABLES = (
    "usage_groups",
    "tag_keys",
    "path_keys",
    "tag_usage",
    "tag_values",
    "instance_groups",
)
# Tables the dump knows how to write without ids. Anything else in the database
# (say, summary tables added later) is dumped with all its columns.
_KNOWN = {
    "runs",
    "files",
    "errors",
    "patients",
    "studies",
    "series",
    "instances",
    "paths",
    "elements",
    "encapsulated",
    "alembic_version",
}


def engine_for(url: str) -> sa.Engine:
    """A pool-less engine: nothing stays connected after the test (PostgreSQL drops need that)."""
    return sa.create_engine(url, poolclass=NullPool)


def _sorted(rows: Iterable[Row]) -> list[Row]:
    # None sorts before everything; repr keeps mixed types comparable.
    return sorted(
        rows,
        key=lambda row: tuple(
            (v is not None, repr(v) if not isinstance(v, (int, float, str)) else v) for v in row
        ),
    )


def dump_index(url: str, *, tables: Sequence[str] | None = None) -> Dump:
    """The whole index behind `url` in canonical, id-independent form (see the module docstring).

    `runs` is not part of the dump (an interrupted run and its completion are two
    runs where a clean run is one); use `run_outcomes` for it.
    """
    f, p, st, se, i = schema.files, schema.patients, schema.studies, schema.series, schema.instances
    queries: dict[str, Any] = {
        "files": sa.select(*[c for c in f.c if c.name not in _VOLATILE["files"]]),
        "errors": sa.select(*[c for c in schema.errors.c if c.name not in _VOLATILE["errors"]]),
        "patients": sa.select(*[c for c in p.c if c.name != "id"]),
        "studies": sa.select(
            p.c.patient_id.label("patient_key_id"),
            p.c.issuer.label("patient_key_issuer"),
            *[c for c in st.c if c.name not in ("id", "patient_ref")],
        ).select_from(st.outerjoin(p, p.c.id == st.c.patient_ref)),
        "series": sa.select(
            st.c.study_uid.label("study_key"),
            *[c for c in se.c if c.name not in ("id", "study_ref")],
        ).select_from(se.outerjoin(st, st.c.id == se.c.study_ref)),
        "instances": sa.select(
            f.c.path,
            se.c.series_uid.label("series_key"),
            *[c for c in i.c if c.name not in ("file_id", "series_ref")],
        ).select_from(
            i.outerjoin(f, f.c.id == i.c.file_id).outerjoin(se, se.c.id == i.c.series_ref)
        ),
        "paths": sa.select(*schema.paths.c),
        "elements": sa.select(
            f.c.path.label("file"),
            schema.paths.c.path,
            schema.paths.c.private_creator,
            *[c for c in schema.elements.c if c.name not in ("file_id", "path_id")],
        ).select_from(
            schema.elements.outerjoin(f, f.c.id == schema.elements.c.file_id).outerjoin(
                schema.paths, schema.paths.c.id == schema.elements.c.path_id
            )
        ),
        "encapsulated": sa.select(
            f.c.path, *[c for c in schema.encapsulated.c if c.name != "file_id"]
        ).select_from(schema.encapsulated.outerjoin(f, f.c.id == schema.encapsulated.c.file_id)),
    }
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            out: Dump = {}
            for name, query in queries.items():
                if tables is None or name in tables:
                    out[name] = _sorted(tuple(r) for r in conn.execute(query))
            if tables is None:
                out["alembic_version"] = [
                    tuple(r)
                    for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                ]
                for extra in sorted(present - _KNOWN):
                    # Tables without autoincrement ids (the summaries): every column as it is.
                    table = schema.metadata.tables.get(extra)
                    if table is None:
                        table = sa.Table(extra, sa.MetaData(), autoload_with=conn)
                    out[extra] = _sorted(tuple(r) for r in conn.execute(sa.select(table)))
            return out
    finally:
        engine.dispose()


def diff_dumps(a: Dump, b: Dump, *, limit: int = 6) -> str:
    """A short human description of how two dumps differ ("" when equal)."""
    lines: list[str] = []
    for name in sorted(set(a) | set(b)):
        ra, rb = Counter(a.get(name, [])), Counter(b.get(name, []))
        if ra == rb:
            continue
        only_a = list((ra - rb).elements())
        only_b = list((rb - ra).elements())
        lines.append(
            f"table {name}: {len(only_a)} rows only in the first, {len(only_b)} only in the second "
            f"({sum(ra.values())} vs {sum(rb.values())} rows)"
        )
        lines += [f"  - {r!r}"[:400] for r in _sorted(only_a)[:limit]]
        lines += [f"  + {r!r}"[:400] for r in _sorted(only_b)[:limit]]
    return "\n".join(lines)


def run_outcomes(url: str) -> list[str]:
    """Outcomes of the runs recorded in the index, oldest first."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("runs"):
                return []
            return [
                r[0]
                for r in conn.execute(sa.select(schema.runs.c.outcome).order_by(schema.runs.c.id))
            ]
    finally:
        engine.dispose()


def rebuilt_summaries(url: str, tables: Sequence[str]) -> dict[str, list[Row]]:
    """`tables` (summary tables) as summaries.rebuild recounts them from the elements, in a
    transaction rolled back: the index is left as it was."""
    from indexer import summaries

    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            summaries.rebuild(conn)
            rebuilt = {
                t: sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
                for t in tables
            }
            trans.rollback()
            return rebuilt
    finally:
        engine.dispose()


def query(url: str, sql: str, **params: Any) -> list[Row]:
    """Rows of one SQL statement on the index behind `url`."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def view_names(url: str) -> set[str]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_view_names())
    finally:
        engine.dispose()


def reset_database(url: str) -> None:
    """Drop every view and table (index and alembic_version), leaving an empty database."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            for view in sa.inspect(conn).get_view_names():
                conn.execute(sa.text(f"DROP VIEW {view}"))  # PostgreSQL keeps a view's tables
            meta = sa.MetaData()
            meta.reflect(conn)
            meta.drop_all(conn)
    finally:
        engine.dispose()


# -- PostgreSQL databases of the tests' own --------------------------------------------------------


PG_CONNECT_TIMEOUT_S = 5


def pg_engine(url: str, *, isolation_level: str = "READ COMMITTED") -> sa.Engine:
    """A pool-less engine on a PostgreSQL server that gives up connecting after a few seconds."""
    return sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level=isolation_level,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


@contextmanager
def pg_database(
    server_url: str, *, template: str | None = None, options: str = ""
) -> Iterator[str]:
    """A new PostgreSQL database on the server of `server_url` (empty, or a copy of the
    database of URL `template`; `options` go to CREATE DATABASE), dropped afterwards. The
    one place the tests create and drop PostgreSQL databases."""
    name = f"idx_test_{secrets.token_hex(6)}"
    admin = pg_engine(server_url, isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{make_url(template).database}"' if template else ""
    copy += f" {options}" if options else ""
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{copy}'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections a failed test left open (pools not disposed).
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fresh_database(
    kind: str, directory: Path, server_url: str | None, *, template: str | None = None
) -> Iterator[str]:
    """A fresh database of `kind` ("sqlite": a file in `directory`, or "postgresql").

    Empty, or a copy of the database `template` (see SchemaTemplates).
    """
    if kind == "sqlite":
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"index-{secrets.token_hex(4)}.db"
        if template is not None:
            shutil.copy2(make_url(template).database or "", path)
        yield f"sqlite:///{path}"
        return
    assert server_url is not None
    with pg_database(server_url, template=template) as url:
        yield url


def clear_index(url: str) -> None:
    """Empty every table of an index but keep its schema: a fresh index, without the cost of
    creating (and on PostgreSQL, dropping) a database and running the migrations for each test."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            names = sorted(set(sa.inspect(conn).get_table_names()) - {"alembic_version"})
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
            else:
                for name in names:
                    conn.execute(sa.text(f"DELETE FROM {name}"))
    finally:
        engine.dispose()


# -- file trees ---------------------------------------------------------------------------------


def copy_files(src_root: Path, relpaths: Iterable[str], dst_root: Path) -> list[Path]:
    """Copy `relpaths` of `src_root` below `dst_root`, keeping the folder layout; the copies."""
    out = []
    for rel in relpaths:
        dst = dst_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, dst)
        out.append(dst)
    return out


def replicated_corpus(
    corpus_dir: Path, manifest: list[dict[str, str]], root: Path, *, copies: int, max_bytes: int
) -> Path:
    """`root` holding `copies` folders, each a copy of the corpus files of at most `max_bytes`."""
    chosen = [r["relpath"] for r in manifest if int(r["bytes"]) <= max_bytes]
    for i in range(copies):
        copy_files(corpus_dir, chosen, root / f"copy{i}")
    return root


def regular_files(root: Path) -> list[Path]:
    """Every regular file below `root` (symlinks not followed), sorted."""
    out = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                out.append(path)
    return sorted(out)


def set_mtime_ns(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


# -- independent truth ------------------------------------------------------------------------


def pydicom_counts(path: Path) -> tuple[int, int]:
    """(element_count, max_sequence_depth) of a file by pydicom, with the MANIFEST's counting rules.

    Every element at every depth counts 1, a sequence 1 plus what its items hold,
    items themselves nothing, group 0002 at the top level nothing.
    """
    ds = pydicom.dcmread(path, force=True)

    def walk(dataset: pydicom.Dataset, depth: int) -> tuple[int, int]:
        count, deepest = 0, depth
        for elem in dataset:
            if depth == 0 and elem.tag.group == 0x0002:
                continue
            count += 1
            if elem.VR == "SQ":
                deepest = max(deepest, depth + 1)
                for item in elem.value:
                    c, d = walk(item, depth + 1)
                    count += c
                    deepest = max(deepest, d)
        return count, deepest

    return walk(ds, 0)


def counted_element_rows(url: str) -> dict[str, int]:
    """Per file path: elements rows that are neither META nor ITEM (what element_count counts)."""
    rows = query(
        url,
        "SELECT f.path, COUNT(e.ordinal) FROM files f JOIN elements e ON e.file_id = f.id "
        f"WHERE (e.flags & {META | ITEM}) = 0 GROUP BY f.path",
    )
    return {path: int(n) for path, n in rows}


def readable_rows(manifest: list[dict[str, str]]) -> list[dict[str, str]]:
    """The manifest rows of the files DCMTK reads (the corpus reports are checked against them)."""
    return [r for r in manifest if r["readable_by_dcmtk"] == "yes"]


def pydicom_read(path: Path, *keywords: str) -> pydicom.Dataset | None:
    """A file read by pydicom (only `keywords` if given); None for the few it cannot read."""
    try:
        return pydicom.dcmread(
            path, stop_before_pixels=True, force=True, specific_tags=list(keywords) or None
        )
    except (OSError, ValueError, struct.error):
        return None


def pydicom_nested(path: Path, sequence: str, keyword: str) -> list[str] | None:
    """Values of `keyword` in the items of top-level `sequence`; None if pydicom cannot read it."""
    ds = pydicom_read(path)
    if ds is None:
        return None
    return [str(item[keyword].value) for item in ds.get(sequence, None) or [] if keyword in item]


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2  # linux/capability.h
_PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def obey_permission_bits() -> None:
    """Make this process, and what it forks or executes, subject to permission bits, as root too.

    Root keeps uid 0, so it still reaches the code, the test's files and its databases (it owns
    them) wherever the clone sits, a 0700 `mktemp -d` folder or /root: dropping to user nobody
    could not. It only gives up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, the capabilities that
    let root ignore permission bits: from the bounding set (so they stay gone after exec) and
    from the effective, permitted and inheritable sets (gone now, and in forked workers). For
    any other user this does nothing: permission bits already bind. Call it in a forked child
    or as a `preexec_fn`. Raises OSError where the capabilities cannot be dropped.
    """
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)  # this process
    # effective, permitted, inheritable for capabilities 0-31, then the same for 32-63
    data = (ctypes.c_uint32 * 6)()
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    keep = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    for i in range(3):
        data[i] &= keep
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def in_child_obeying_permissions(work: Callable[[], Any]) -> Any:
    """Run `work` in a forked child that obeys permission bits (obey_permission_bits) and return
    its result (pickled back through a pipe). A failure in the child fails the caller, with the
    child's traceback. Skips only where root cannot give up the capabilities (not Linux)."""
    import pickle
    import traceback

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(r)
            try:
                obey_permission_bits()
            except OSError as err:
                os.write(w, pickle.dumps(("skip", str(err))))
                code = 0
            else:
                try:
                    result = ("ok", work())
                except BaseException:  # noqa: BLE001 - reported to the parent
                    result = ("error", traceback.format_exc())
                os.write(w, pickle.dumps(result))
                code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the child died"
    kind, value = pickle.loads(data)
    if kind == "skip":
        pytest.skip(f"root cannot give up the capabilities that bypass permission bits: {value}")
    if kind == "error":
        raise AssertionError(f"in the child obeying permission bits:\n{value}")
    return value


def by_path(rows: Iterable[Row]) -> dict[str, Row]:
    return {row[0]: row for row in rows}


def single_line(text: str) -> bool:
    return len([line for line in text.splitlines() if line.strip()]) == 1


def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `indexer` command as a separate process."""
    full_env = dict(os.environ)
    full_env.pop("INDEXER_DB", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [str(INDEXER_BIN), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


# The two databases, as pytest parameters (the PostgreSQL one marked `postgres`).
DB_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def server_for(request: pytest.FixtureRequest, kind: str) -> str | None:
    """The PostgreSQL server URL (conftest's pg_url: fails when set but down); None for SQLite."""
    return str(request.getfixturevalue("pg_url")) if kind == "postgresql" else None


# -- indexer processes killed with SIGKILL (crash and fault tests) -------------------------------


def start_index(url: str, tree: Path, args: Sequence[str] | None = None) -> subprocess.Popen[str]:
    """`indexer index TREE` (or `args`) in a session of its own, so that its pool workers can be
    killed with it by process group."""
    command = (
        list(args)
        if args is not None
        else [str(INDEXER_BIN), "index", str(tree), "--db", url, "-w", "2", "-q"]
    )
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def kill_index(proc: subprocess.Popen[str]) -> tuple[int | None, str]:
    """SIGKILL the indexer and its workers; returns its exit code when it had ended already
    (None when the kill hit it), and what it wrote on stderr."""
    ended = proc.poll()
    if ended is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # pool workers left behind by the kill
    _, stderr = proc.communicate()
    return ended, stderr


def children(pid: int) -> list[int]:
    """The child processes of `pid` (its pool workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def files_written(url: str) -> int:
    """Rows in `files`; 0 while the schema is not there yet (a SQLite file is never created)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return 0
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM files")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


def on_terminal(
    args: Sequence[str], *, columns: int, stream: str = "stdout", timeout: float = 60
) -> tuple[int, str, str]:
    """Run `indexer ARGS` with `stream` (stdout or stderr) on a real pty `columns` wide.

    Returns the exit code, what the terminal got (raw: carriage returns kept) and the other
    stream, piped."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "INDEXER_DB")}
    on_pty = {stream: slave}
    proc = subprocess.Popen(
        [str(INDEXER_BIN), *args],
        stdout=on_pty.get("stdout", subprocess.PIPE),
        stderr=on_pty.get("stderr", subprocess.PIPE),
        env=env,
        text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, b"".join(chunks).decode(), err if stream == "stdout" else out


def edited_copy(source: Path, target: Path, **changes: Any) -> None:
    """`source` saved as `target` with a new SOP Instance UID and `changes` (keyword: value;
    None deletes the element), by pydicom."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = (
        f"{ds.SOPInstanceUID}.{len(target.name)}9"
    )
    for keyword, value in changes.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    ds.save_as(target)
