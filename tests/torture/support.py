"""Helpers of the torture suite: bounded indexer runs, relative dumps, the good-file set."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import INDEXER_BIN, Dump, diff_dumps, dump_index

# What the `new_db` fixture gives: call it for a fresh database of the test's kind, in a `with`.
DbFactory = Callable[[], AbstractContextManager[str]]

# Real corpus files that index cleanly (DCMTK reads them): sequences, private and UN
# sequences, charsets, deflate, big endian, no meta header, invalid VR, encapsulated
# pixel data, a DICOMDIR, SR, multi-vendor MR. Small, so a run takes seconds.
GOOD_FILES = [
    "pydicom/nested_priv_SQ.dcm",
    "pydicom/no_meta_group_length.dcm",
    "pydicom/priv_SQ.dcm",
    "pydicom/UN_sequence.dcm",
    "pydicom/rtplan.dcm",
    "pydicom/badVR.dcm",
    "pydicom/JPEG2000.dcm",
    "pydicom/MR_small_bigendian.dcm",
    "pydicom/charset_files/chrX1.dcm",
    "fo-dicom/charset/chrGB2312.dcm",
    "fo-dicom/GH223.dcm",
    "fo-dicom/GH179A.dcm",
    "fo-dicom/GH184.dcm",
    "fo-dicom/GH064.dcm",
    "fo-dicom/test_SR.dcm",
    "fo-dicom/DICOMDIR",
    "dicomParser/deflate/report_dfl",
    "highdicom/sm_image_jpegls.dcm",
    "broken/pydicom/ExplVR_LitEndNoMeta.dcm",
    "dcm_qa_philips/Magdeburg_2014/fmri/201_EPI_asc_CLEAR_0001_01.dcm",
    "dcm_qa_nih/20180918GE/mr_0005/axial_epi_fmri_sequential_i_to_s-00001.dcm",
]

# Tables with one row set per file; their first column is the file's path.
PER_FILE_TABLES = ("files", "errors", "instances", "elements", "encapsulated")
# Tables shared by many files (one row per patient, study, series, sequence path).
SHARED_TABLES = ("patients", "studies", "series", "paths")

RUN_TIMEOUT_S = 120.0


def copy_good(corpus: Path, dest: Path, names: Sequence[str] = GOOD_FILES) -> list[Path]:
    out = []
    for rel in names:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(corpus / rel, target)
        out.append(target)
    return out


@dataclass
class Ran:
    """A finished indexer process."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return f"{' '.join(self.args)!r} exited {self.returncode}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-3000:]}"


def _drop_file_permission_override() -> None:
    """In the child: give up root's power to ignore permission bits (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).

    Dropped from the bounding set, the capabilities are gone after exec even for uid 0,
    so a file of mode 000 is unreadable to the indexer, as it is to any user.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_bounded(
    args: Sequence[str],
    *,
    timeout: float = RUN_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    obey_permissions: bool = False,
    umask: int = -1,
) -> Ran:
    """Run a command in a session of its own; on timeout kill the whole group and fail (a hang).

    `obey_permissions`: as root, run it without the capabilities that bypass permission bits.
    """
    import time

    full_env = dict(os.environ)
    full_env.pop("INDEXER_DB", None)
    if env:
        full_env.update(env)
    extra: dict[str, Any] = {}
    if obey_permissions and os.geteuid() == 0:
        extra = {"preexec_fn": _drop_file_permission_override}
    started = time.monotonic()
    proc = subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="backslashreplace",
        env=full_env,
        cwd=cwd,
        start_new_session=True,
        umask=umask,
        **extra,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(
            f"HANG: {' '.join(args)!r} did not end within {timeout:.0f} s\n"
            f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}"
        ) from None
    kill_group(proc)  # pool workers a killed or failed run may have left behind
    return Ran(list(args), proc.returncode, out, err, time.monotonic() - started)


def kill_group(proc: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def indexer(*args: str, **kwargs: Any) -> Ran:
    """`indexer ARGS` as a separate process, bounded in time."""
    return run_bounded([str(INDEXER_BIN), *args], **kwargs)


def index_cli(paths: Iterable[Path | str], url: str, *extra: str, **kwargs: Any) -> Ran:
    return indexer("index", *map(str, paths), "--db", url, "-w", "2", *extra, **kwargs)


# -- dumps ----------------------------------------------------------------------------------


def _relative(value: Any, prefix: str) -> Any:
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix) :]
    return value


def relative_dump(url: str, root: Path) -> Dump:
    """dump_index with every string that starts with `root/` made relative to it."""
    prefix = str(root) + os.sep
    return {
        name: sorted((tuple(_relative(v, prefix) for v in row) for row in rows), key=repr)
        for name, rows in dump_index(url).items()
    }


def restrict(dump: Dump, keep: Any) -> Dump:
    """The per-file tables' rows whose path (first column) satisfies `keep`."""
    return {name: [row for row in dump[name] if keep(row[0])] for name in PER_FILE_TABLES}


def shared_missing(reference: Dump, actual: Dump) -> str:
    """Rows of the shared tables that the reference has and `actual` lacks ("" when none)."""
    lines = []
    for name in SHARED_TABLES:
        lacking = Counter(reference.get(name, [])) - Counter(actual.get(name, []))
        if lacking:
            lines.append(
                f"table {name}: {sum(lacking.values())} rows of the clean run are missing or differ"
            )
            lines += [f"  - {r!r}"[:400] for r in sorted(lacking, key=repr)[:6]]
    return "\n".join(lines)


def good_content_diff(reference: Dump, actual: Dump, good_prefix: str = "good/") -> str:
    """How the good files' content in `actual` differs from a clean run over them alone ("" when equal)."""

    def keep(path):
        return isinstance(path, str) and path.startswith(good_prefix)

    return "\n".join(
        filter(
            None,
            [
                diff_dumps(restrict(reference, keep), restrict(actual, keep)),
                shared_missing(reference, actual),
            ],
        )
    )


def strip_ids(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows without their first column (the table's own id), sorted."""
    return sorted((tuple(r[1:]) for r in rows), key=repr)


def new_database_like(kind: str, url: str, directory: Path) -> Any:
    """A second fresh database on the same server (or folder) as `url`."""
    from helpers import fresh_database

    server = url if kind == "postgresql" else None
    return fresh_database(kind, directory / "second-db", server)


def cli(*args: str) -> Ran:
    """`indexer ARGS` in this process (typer's CliRunner): for commands that read the index only."""
    import time

    from typer.testing import CliRunner

    from indexer.cli import app

    started = time.monotonic()
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return Ran(
        ["indexer", *args],
        result.exit_code,
        result.stdout,
        result.stderr,
        time.monotonic() - started,
    )
