"""The `indexer` command: a thin layer of options and printing over the library."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer._click._textwrap as click_textwrap
import typer.core

from . import __version__
from .errors import IndexerError
from .output import Format, machine_key, render_csv, render_json, render_table, terminal_width

if TYPE_CHECKING:
    from .run import IndexReport


def _argument_usage(self: typer.core.TyperArgument) -> str:
    """`PATH...` and `[FILTER]...` in usage lines, as click writes them (not `{PATH}...`)."""
    name = self.metavar or (self.name or "").upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


def _argument_type(self: typer.core.TyperArgument, ctx: Any) -> str:
    """No `<list[Path]>` beside an argument: its metavar and help say what it takes."""
    return ""


def _argument_help_name(self: typer.core.TyperArgument) -> str:
    """`QUERY` in the Arguments section, as in the usage line (not the parameter's `query`)."""
    name = self.metavar or (self.name or "").upper()
    return name + ("..." if self.metavar is None and self.nargs != 1 else "")


def _range_help(self: Any) -> str | None:
    """`16 or more` after an option's help, not click's `x>=16`."""
    low, high = self.min, self.max
    if low is None and high is None:
        return None
    if high is None:
        return f"{low} or more"
    if low is None:
        return f"{high} or less"
    return f"{low} to {high}"


class _WholeWords(click_textwrap.TextWrapper):
    """Help wrapped between words only: a long key such as a sequence path stays whole on a
    narrow terminal (typer's copy of click cuts any word longer than the line)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("break_long_words", False)
        kwargs.setdefault("break_on_hyphens", False)
        super().__init__(*args, **kwargs)

    def _handle_long_word(
        self, reversed_chunks: list[str], cur_line: list[str], cur_len: int, width: int
    ) -> None:
        # The standard library's: a word longer than the line gets a line of its own.
        textwrap.TextWrapper._handle_long_word(self, reversed_chunks, cur_line, cur_len, width)


click_textwrap.TextWrapper = _WholeWords  # type: ignore[misc]  # wrap_text imports it per call

# typer offers no class of its own for arguments; these methods only render help.
typer.core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
typer.core.TyperArgument.display_type = _argument_type  # type: ignore[method-assign,assignment]
typer.core.TyperArgument._rich_display_name = _argument_help_name  # type: ignore[method-assign]
typer.core.TyperArgument._get_number_range_help_str = _range_help  # type: ignore[method-assign]
typer.core.TyperOption._get_number_range_help_str = _range_help  # type: ignore[method-assign]

# -h as well as --help, on every command (subcommands inherit it from the top context).
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="Index DICOM archives into SQLite or PostgreSQL, and ask the index questions.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)
db_app = typer.Typer(
    help="Manage the index database schema.", no_args_is_help=True, context_settings=CONTEXT
)
app.add_typer(db_app, name="db")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="INDEXER_DB",
        metavar="DB",
        help="The index, by default dicom-index.db: a SQLite file or a PostgreSQL URL "
        "(postgresql://user@host/name); SQLite and PostgreSQL are supported.",
        show_envvar=True,
    ),
]
FormatOption = Annotated[
    Format,
    typer.Option("--format", "-f", metavar="FORMAT", help="Output format: table, json, csv."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"indexer {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Index DICOM archives into SQLite or PostgreSQL, and ask the index questions."""


@contextmanager
def reported_errors(doing: str = "read the index") -> Iterator[None]:
    """Library errors (IndexerError, a database error while the command does `doing`) become
    one line on stderr and exit code 1; any other exception keeps its traceback."""
    try:
        yield
    except Exception as err:
        message = _error_line(err, doing)
        if message is None:
            raise
        missing = _MISSING_DATABASE.search(message)
        if missing:  # PostgreSQL does not create databases on connect, as SQLite does
            message += f"; create it first: createdb {missing[1]}"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=1) from None


_MISSING_DATABASE = re.compile(r'database "([^"]+)" does not exist')


def _error_line(err: Exception, doing: str) -> str | None:
    if isinstance(err, IndexerError):
        return str(err)
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")  # not imported: no database was used
    if sqlalchemy_exc is not None and isinstance(err, sqlalchemy_exc.SQLAlchemyError):
        from .db import first_line

        return f"cannot {doing}: {first_line(err)}"
    return None


# -- index ------------------------------------------------------------------------------------


@app.command()
def index(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", help="Files and folders to index.", show_default=False),
    ],
    db: DbOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=0,
            metavar="N",
            help="Reader processes; 0 reads in this process [default: CPU count].",
        ),
    ] = None,
    writers: Annotated[
        int,
        typer.Option(
            "--writers",
            min=1,
            metavar="N",
            help="PostgreSQL: N worker processes that each write their own chunks "
            "(in place of --workers). SQLite allows one writer.",
        ),
    ] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="PostgreSQL: a Dask scheduler (tcp://HOST:8786) whose workers read, walk and "
            "write the chunks; PATHS must be mounted at the same place on every worker.",
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option(help="Delete files gone from PATHS instead of marking them missing.")
    ] = False,
    value_limit: Annotated[
        int, typer.Option(min=16, metavar="N", help="Characters of each value kept.")
    ] = 1024,
    follow_links: Annotated[
        bool,
        typer.Option(
            "--follow-links",
            help="Also follow symlinks that lead outside PATHS (never into /proc, /sys, /dev).",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No progress bar or log lines; no summary unless --format is json or csv.",
        ),
    ] = False,
    output: Annotated[
        Format,
        typer.Option("--format", "-f", metavar="FORMAT", help="Summary format: table, json, csv."),
    ] = Format.table,
    log_every: Annotated[
        float,
        typer.Option(
            "--log-every",
            min=0,
            metavar="SECONDS",
            help="Where stderr is no terminal (cron, Slurm): a progress line this often, and "
            "one at the end; 0: none.",
        ),
    ] = 60,
) -> None:
    """Index every DICOM file under PATHS (found by content, any file name).

    Re-runs read only new and changed files. Examples:

    \b
    indexer index /archive --db index.db
    indexer index /archive --db index.db --log-every 300 2>> index.log   # cron, Slurm
    indexer index /archive --db postgresql://host/idx --writers 8        # many writers
    indexer index /archive --db postgresql://host/idx --scheduler tcp://host:8786   # Dask
    """
    from .run import index_paths

    terminal = sys.stderr.isatty()
    progress = _ProgressBar(shown=not quiet and terminal)
    log = _ProgressLog(every=0 if quiet or terminal else log_every)

    def on_progress(report: IndexReport) -> None:
        progress(report)
        log(report)

    try:
        with reported_errors("write the index"):
            report = index_paths(
                [str(p) for p in paths],
                db,
                workers=workers,
                prune=prune,
                value_limit=value_limit,
                progress=on_progress,
                follow_links=follow_links,
                writers=writers,
                scheduler=scheduler,
            )
    except KeyboardInterrupt as err:
        # The run is stopped and recorded: another Ctrl-C (or SIGTERM) must not turn the exit
        # into a death by signal or a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        progress.close()
        signum = getattr(err, "signum", signal.SIGINT)  # RunStopped: SIGINT or SIGTERM
        typer.echo(
            f"interrupted ({signal.Signals(signum).name}): what was written so far is kept; "
            "run the same command again to finish",
            err=True,
        )
        raise typer.Exit(code=128 + signum) from None  # the shell's code for that signal
    finally:
        progress.close()
    log.final(report)
    if quiet and output is Format.table:
        return  # -q -f json|csv: a script asked for the summary, without the progress bar
    summary = _index_summary(report, prune)
    if output is Format.table:
        _print_mapping(_index_table(summary), output)
    else:
        _print_mapping(summary, output)
    if report.errors or report.crawl_problems:
        typer.echo("see which files and why: indexer errors", err=True)


class _ProgressBar:
    """The index run's progress callback: a tqdm bar on stderr, made on first use (its monitor
    thread must not exist when workers fork). Its total is the files the crawl found so far,
    ahead of the readers; "counting" stays in the bar until the crawl is over."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown
        self.bar: Any = None

    def __call__(self, report: IndexReport) -> None:
        if not self.shown:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(unit=" files", desc="indexing", dynamic_ncols=True, file=sys.stderr)
        # Once the files are done, the bar says what the run does then.
        self.bar.set_description(report.finishing or "indexing", refresh=False)
        self.bar.total = max(report.files_found, report.files_done) or None
        postfix: dict[str, object] = {"errors": report.errors}
        if not report.crawl_complete:
            postfix["total"] = "counting"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(report.files_done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _ProgressLog:
    """The progress callback where stderr is no terminal (cron, Slurm, systemd): one line
    every `every` seconds and one at the end, with counts only (no path, no value)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last = 0.0  # report.elapsed of the last line

    def __call__(self, report: IndexReport) -> None:
        if self.every > 0 and report.finishing:
            typer.echo(f"{report.finishing}: {_progress_line(report)}", err=True)
        elif self.every > 0 and report.elapsed - self.last >= self.every:
            self.last = report.elapsed
            typer.echo(f"indexing: {_progress_line(report)}", err=True)

    def final(self, report: IndexReport) -> None:
        if self.every > 0:
            typer.echo(f"{report.outcome}: {_progress_line(report)}", err=True)


def _progress_line(report: IndexReport) -> str:
    """`1200/5000 files (24.0%), 410.5 files/s, 3 errors, elapsed 0:00:02, eta 0:00:09`;
    `1200/5000+ files (counting)` and no eta while the crawl is going on."""
    done, total = report.files_done, max(report.files_found, report.files_done)
    rate = done / report.elapsed if report.elapsed > 0 else 0.0
    if report.crawl_complete:
        share = f"{100 * done / total:.1f}%" if total else "100.0%"
        counts = f"{done}/{total} files ({share})"
    else:
        counts = f"{done}/{total}+ files (counting)"
    line = f"{counts}, {rate:.1f} files/s, {report.errors} errors, "
    line += f"elapsed {_clock(report.elapsed)}"
    if report.crawl_complete and rate > 0 and done < total:
        line += f", eta {_clock((total - done) / rate)}"
    return line


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _index_summary(report: IndexReport, prune: bool) -> dict[str, Any]:
    """The run summary under its JSON/CSV keys (README: "index --format json"); the table
    prints INDEX_LABELS instead."""
    read = report.indexed + report.partial + report.failed + report.skipped
    return {
        "database": report.database,
        "run": report.run_id,
        "files_seen": report.files_seen,
        "indexed": report.indexed,
        "indexed_with_problems": report.partial,
        "not_indexed": report.failed,
        "unchanged": report.unchanged,
        "not_dicom": report.skipped,
        "errors": report.errors,  # the one definition: indexed_with_problems + not_indexed
        "missing": report.missing,
        "pruned": prune,
        "crawl_problems": report.crawl_problems,
        "elements_written": report.elements,
        "elapsed_s": round(report.elapsed, 2),
        # Files read per second; an unchanged re-run read none, so it has no rate (null).
        "files_per_s": round(report.files_per_second, 1) if read else None,
        # Seconds the run spent building the path index at its end; null when it was there.
        "path_index_s": (
            None if report.path_index_seconds is None else round(report.path_index_seconds, 2)
        ),
    }


INDEX_LABELS = {
    "files_seen": "files seen",
    "indexed_with_problems": "indexed with problems",
    "not_indexed": "not indexed",
    "not_dicom": "not DICOM (skipped)",
    "crawl_problems": "crawl problems",
    "elements_written": "elements written",
    "elapsed_s": "elapsed s",
    "files_per_s": "files/s",
    "path_index_s": "path index built s",
}


def _index_table(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with the human labels; the missing count says whether it was pruned, and an
    absent rate is left out."""
    labels = dict(INDEX_LABELS, missing="missing (pruned)" if summary["pruned"] else "missing")
    return {
        labels.get(k, k): v
        for k, v in summary.items()
        if k != "pruned" and not (k in ("files_per_s", "path_index_s") and v is None)
    }


# -- stats ------------------------------------------------------------------------------------


class Breakdown(str, Enum):
    modality = "modality"
    sop_class = "sop-class"
    transfer_syntax = "transfer-syntax"
    manufacturer = "manufacturer"
    study_year = "study-year"


@app.command()
def stats(
    db: DbOption = None,
    output: FormatOption = Format.table,
    by: Annotated[
        Breakdown | None,
        typer.Option(
            "--by",
            metavar="BREAKDOWN",
            help="Print this one breakdown alone: modality, sop-class, transfer-syntax, "
            "manufacturer or study-year.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Counts of the index (patients to elements, errors, duplicates) and breakdowns.

    Reads the database only; prints no patient values. Example: indexer stats --by modality
    """
    from .db import connect
    from .reports import collect_breakdown, collect_stats

    with reported_errors(), connect(db) as conn:
        if by is not None:
            rows = collect_breakdown(conn, by.value)
        else:
            data = collect_stats(conn)
    if by is not None:
        _print_rows(rows, output)
    else:
        _print_stats(data, output)


def _print_stats(data: dict[str, Any], output: Format) -> None:
    if output is Format.json:
        typer.echo(render_json(data))
        return
    scalars = {k: v for k, v in data.items() if not isinstance(v, list)}
    lists = {k: v for k, v in data.items() if isinstance(v, list)}
    if output is Format.csv:
        flat = list(_flatten(scalars))
        for name, rows in lists.items():
            for row in rows:
                label = "/".join(
                    "" if v is None else str(v) for v in list(row.values())[: _label_columns(row)]
                )
                flat.extend(
                    (f"{name}[{label}].{k}", v) for k, v in list(row.items())[_label_columns(row) :]
                )
        typer.echo(render_csv(["key", "value"], flat), nl=False)
        return
    _print_mapping(scalars, output)
    for name, rows in lists.items():
        typer.echo(f"\n{name.replace('_', ' ')}")
        typer.echo(_rows_table(rows))


def _label_columns(row: dict[str, Any]) -> int:
    """How many leading columns of a breakdown row name it (the rest are counts)."""
    return 2 if "model" in row else 1


def _rows_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    labels = _label_columns(rows[0])
    cells = [
        [("(none)" if v is None and i < labels else v) for i, v in enumerate(row.values())]
        for row in rows
    ]
    return render_table(columns, cells, terminal_width())


def _print_rows(rows: list[dict[str, Any]], output: Format, columns: tuple[str, ...] = ()) -> None:
    """Rows as a table, JSON or CSV; `columns` head a CSV without rows (pandas needs them)."""
    if output is Format.json:
        typer.echo(render_json(rows))
    elif output is Format.csv:
        columns = tuple(rows[0]) if rows else columns
        typer.echo(
            render_csv(columns, [[_csv_value(v) for v in r.values()] for r in rows]), nl=False
        )
    else:
        typer.echo(_rows_table(rows))


def _csv_value(value: Any) -> Any:
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)  # the DICOM way of writing several values
    return value


# -- tags -------------------------------------------------------------------------------------


ModalityOption = Annotated[
    str | None,
    typer.Option(
        "--modality",
        "-m",
        metavar="MODALITY",
        help="Only instances of this modality.",
        show_default=False,
    ),
]

SopClassOption = Annotated[
    str | None,
    typer.Option(
        "--sop-class",
        metavar="SOP_CLASS",
        help="Only instances of this SOP class (UID, name or keyword).",
        show_default=False,
    ),
]

TagOption = Annotated[
    str | None,
    typer.Option(
        "--tag",
        "-t",
        metavar="TAG",
        help="One tag's values: keyword, (gggg,eeee), private key or sequence path.",
        show_default=False,
    ),
]

PathOption = Annotated[
    str | None,
    typer.Option(
        "--path",
        metavar="PATTERN",
        help="Tags whose key or keyword path matches this pattern (* and ?), "
        "e.g. '(0040,0275).*' or '*.CodeValue'.",
        show_default=False,
    ),
]

TopOption = Annotated[
    int | None,
    typer.Option(
        "--top",
        min=0,
        metavar="N",
        help="Most common values shown per tag [default: 5; with --tag: all].",
        show_default=False,
    ),
]


@app.command()
def tags(
    db: DbOption = None,
    output: FormatOption = Format.table,
    modality: ModalityOption = None,
    sop_class: SopClassOption = None,
    private: Annotated[bool, typer.Option("--private", help="Private tags only.")] = False,
    tag: TagOption = None,
    path: PathOption = None,
    top: TopOption = None,
    patient_values: Annotated[
        bool,
        typer.Option(
            "--patient-values", help="Show values of patient tags (names, IDs, birth dates, ...)."
        ),
    ] = False,
) -> None:
    """Tag usage across the index: instances that have each tag, share, distinct and common values.

    Public tags by keyword, private tags by group, private creator and element byte, nested
    tags by the sequences they sit in. Example: indexer tags --modality MR --private
    """
    from .db import connect
    from .reports import tag_usage, tag_values_report

    with reported_errors(), connect(db) as conn:
        if tag is not None:
            report = tag_values_report(
                conn,
                tag,
                modality=modality,
                sop_class=sop_class,
                limit=top or None,
                patient_values=patient_values,
            )
        else:
            usage = tag_usage(
                conn,
                modality=modality,
                sop_class=sop_class,
                private=private,
                path=path,
                top=5 if top is None else top,
                patient_values=patient_values,
            )
    if tag is not None:
        _print_tag_values(report, output)
    else:
        _print_tag_usage(usage, output)


_TAG_USAGE_CSV = (
    "tag", "keyword", "name", "private_creator", "depth", "instances", "share", "occurrences",
    "distinct_values", "distinct_values_complete", "values_hidden", "top_values",
)  # fmt: skip


def _print_tag_usage(usage: dict[str, Any], output: Format) -> None:
    if output is Format.json:
        typer.echo(render_json(usage))
        return
    rows = usage["tags"]
    if output is Format.csv:
        cells = [[_tag_usage_cell(r, c) for c in _TAG_USAGE_CSV] for r in rows]
        typer.echo(render_csv(_TAG_USAGE_CSV, cells), nl=False)
        return
    scope = ", ".join(f"{k} {v}" for k, v in usage["filters"].items())
    typer.echo(
        f"{usage['instances']} instances{' (' + scope + ')' if scope else ''}, {len(rows)} tags"
    )
    table = [
        [r["tag"], _tag_label(r), r["instances"], f"{100 * (r['share'] or 0):.1f}%",
         _distinct(r), _common_values(r)]
        for r in rows
    ]  # fmt: skip
    columns = ["tag", "keyword / name", "instances", "share", "distinct", "common values"]
    typer.echo(render_table(columns, table, terminal_width()))


def _tag_usage_cell(row: dict[str, Any], column: str) -> Any:
    value = row[column]
    if column == "top_values" and value is not None:
        return render_json_compact(value)
    return value


def _tag_label(row: dict[str, Any]) -> Any:
    return row["keyword"] if row["keyword"] != row["tag"] else row["name"]


def _common_values(row: dict[str, Any]) -> str:
    if row["values_hidden"]:
        return "(patient data: --patient-values shows it)"
    return ", ".join(f"{_shown(v['value'])} ({v['instances']})" for v in row["top_values"] or [])


def _print_tag_values(report: dict[str, Any], output: Format) -> None:
    if output is Format.json:
        typer.echo(render_json(report))
        return
    values = report["values"] or []
    if output is Format.csv:
        typer.echo(
            render_csv(
                ["value", "instances", "occurrences"],
                [[v["value"], v["instances"], v["occurrences"]] for v in values],
            ),
            nl=False,
        )
        return
    header = {
        "tag": report["tag"],
        "keyword": report["keyword"],
        "name": report["name"],
        "instances": report["instances"],
        "share": f"{100 * (report['share'] or 0):.1f}%",
        "occurrences": report["occurrences"],
        "distinct values": report["distinct_values"],
        "counted from": report["source"],
    }
    _print_mapping(header, output)
    if report["values_hidden"]:
        typer.echo("values hidden (patient data): add --patient-values to show them")
        return
    typer.echo(
        render_table(
            ["value", "instances", "occurrences"],
            [[_shown(v["value"]), v["instances"], v["occurrences"]] for v in values],
            terminal_width(),
        )
    )


def _distinct(row: dict[str, Any]) -> str:
    if row["distinct_values"] is None:
        return "-"
    return (
        str(row["distinct_values"])
        if row["distinct_values_complete"]
        else f">={row['distinct_values']}"
    )


def _shown(value: str | None) -> str:
    if value is None:
        return "(no text value)"
    return '""' if value == "" else value


def render_json_compact(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# -- find -------------------------------------------------------------------------------------


class Level(str, Enum):
    studies = "studies"
    series = "series"
    instances = "instances"


class PathsFormat(str, Enum):
    """table, json, csv, or paths (one file path a line, for xargs): find's and errors' --format."""

    table = "table"
    json = "json"
    csv = "csv"
    paths = "paths"


FieldsOption = Annotated[
    str | None,
    typer.Option(
        "--fields",
        metavar="FIELDS",
        help="Comma-separated columns: keywords, tags (0018,0050) or tag keys (nested: "
        "ReferencedSeriesSequence.SeriesInstanceUID) and the level's columns (path, instances, "
        "...); PatientID and AccessionNumber are printed only when named here.",
        show_default=False,
    ),
]
SortOption = Annotated[
    str | None,
    typer.Option(
        "--sort",
        metavar="FIELD",
        help="Order by this field (numbers as numbers, absent values last); -FIELD descending.",
        show_default=False,
    ),
]
DescOption = Annotated[bool, typer.Option("--desc", help="Sort descending.")]
IncludeMissingOption = Annotated[
    bool,
    typer.Option("--include-missing", help="Also files marked missing (gone at the last run)."),
]


def _filters_argument(help_text: str) -> Any:
    return typer.Argument(metavar="FILTER", help=help_text, show_default=False)


_FILTER_HELP = (
    "KEY=VALUE filters, all must match: PatientID=12*, PatientName=DOE^*, "
    "StudyDate=20240101-20241231, Modality=MR, BodyPartExamined=HEAD; a key in a sequence joins "
    "keywords with dots, e.g. RequestAttributesSequence.RequestedProcedureID=77."
)


def _sort_order(sort: str | None, desc: bool) -> tuple[str | None, bool]:
    if sort is not None and sort.startswith("-"):
        return sort[1:], True
    return sort, desc


def _hint_line(line: str) -> None:
    typer.echo(f"hint: {line}", err=True)


@app.command()
def find(
    level: Annotated[
        Level, typer.Argument(metavar="LEVEL", help="What to list: studies, series or instances.")
    ],
    filters: Annotated[list[str] | None, _filters_argument(_FILTER_HELP)] = None,
    db: DbOption = None,
    output: Annotated[
        PathsFormat,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="Output format: table, json, csv, or paths (instances: one file path a line, "
            "nothing else, for xargs).",
        ),
    ] = PathsFormat.table,
    fields: FieldsOption = None,
    sort: SortOption = None,
    desc: DescOption = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, metavar="N", help="Print at most this many.", show_default=False
        ),
    ] = None,
    include_missing: IncludeMissingOption = False,
) -> None:
    """Studies, series or instances matching attribute filters (the C-FIND / QIDO question).

    Each instance is matched on its own values; a study or series matches when one of its
    instances does. Fast keys (columns of the instance rows, hierarchy UIDs): SOPInstanceUID,
    SOPClassUID, Modality, ModalitiesInStudy, StudyDate, ContentDate, Manufacturer,
    ManufacturerModelName, StudyInstanceUID and SeriesInstanceUID; any other tag reads the
    element rows of that tag (of the files the fast keys left, when they are few);
    PatientID and AccessionNumber read only the files of the studies their rows may hold.
    Comparisons: numbers (DS IS US SS UL SL FL FD SV UV) take KEY=N, KEY!=N, KEY<N, KEY<=N,
    KEY>N, KEY>=N and KEY=FROM-TO; dates and times (DA TM DT) KEY=FROM-TO, >= and <=; UIDs
    a list separated by , or \\; text (and everything else) = only, with * and ? wildcards
    (person names ignore case).
    Prints no patient data (PatientID, AccessionNumber) unless named in --fields. Examples:

    \b
    indexer find studies StudyDate=20240101-20241231 Modality=CT
    indexer find series Modality=CT 'SliceThickness<=1.5' --fields SeriesDescription,instances
    indexer find instances SeriesDescription='*T1*' --fields PatientID,SliceThickness,path
    indexer find instances Modality=MR --sort -SliceThickness --limit 10
    indexer find instances Modality=CT --format paths | xargs -d '\\n' ls -l
    """
    from .db import connect
    from .reports import find as find_in_index
    from .reports import parse_filters
    from .reports.fields import default_fields, resolve_fields, split_fields

    chosen = split_fields(fields) if fields is not None else default_fields(level.value)
    if output is PathsFormat.paths:
        if level is not Level.instances:
            typer.echo("error: --format paths lists files: use find instances", err=True)
            raise typer.Exit(code=1)
        chosen = ["path"]
    sort_field, descending = _sort_order(sort, desc)
    with reported_errors():
        pairs = parse_filters(filters or [])
        with connect(db) as conn:
            rows = find_in_index(
                conn,
                level.value,
                pairs,
                limit=limit,
                include_missing=include_missing,
                hint=_hint_line,
                fields=chosen,
                sort=sort_field,
                descending=descending,
            )
            columns = [f.name for f in resolve_fields(conn, level.value, chosen)]
    if output is PathsFormat.paths:
        _print_disk_paths([r["path"] for r in rows])
    elif output is PathsFormat.table:
        typer.echo(
            _rows_table([{k: _csv_value(v) for k, v in r.items()} for r in rows])
            if rows
            else "no match"
        )
    else:
        _print_rows(rows, Format(output.value), tuple(columns))


def _print_disk_paths(stored: list[str]) -> None:
    """One name a line as it is on disk (bytes: a name that is not UTF-8 still opens through
    xargs); a name holding a newline would read as two lines, so it is left out and counted."""
    from .rows import path_bytes

    names = [path_bytes(p) for p in stored]
    for name in names:
        if b"\n" not in name:
            typer.echo(name)
    split = sum(b"\n" in name for name in names)
    if split:
        _hint_line(f"{split} path(s) hold a newline and are left out; -f json lists them")


# -- export -----------------------------------------------------------------------------------

export_app = typer.Typer(
    help="Write the index out for other tools: chosen fields as CSV, every table as Parquet.",
    no_args_is_help=True,
    context_settings=CONTEXT,
)
app.add_typer(export_app, name="export")


@export_app.command("csv")
def export_csv(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The CSV file to write (mode 0600); - for stdout.")
    ],
    filters: Annotated[list[str] | None, _filters_argument(_FILTER_HELP + " As for find.")] = None,
    fields: FieldsOption = None,
    level: Annotated[
        Level,
        typer.Option("--level", metavar="LEVEL", help="One row per: instances, series, studies."),
    ] = Level.instances,
    sort: SortOption = None,
    desc: DescOption = False,
    include_missing: IncludeMissingOption = False,
    db: DbOption = None,
) -> None:
    """Write one CSV row per matching instance with the chosen fields (pandas.read_csv reads it).

    Fields and filters as for find; without --fields, find's default columns. Example:

    \b
    indexer export csv cohort.csv Modality=CT 'SliceThickness<=1.5' \\
        --fields PatientID,SeriesDescription,SliceThickness,path
    python -c "import pandas; print(pandas.read_csv('cohort.csv'))"
    """
    from .db import connect
    from .reports import parse_filters
    from .reports.export_csv import export_table, write_private
    from .reports.fields import split_fields

    sort_field, descending = _sort_order(sort, desc)
    with reported_errors():
        pairs = parse_filters(filters or [])
        with connect(db) as conn:
            text = export_table(
                conn,
                level=level.value,
                filters=pairs,
                fields=split_fields(fields) if fields is not None else None,
                sort=sort_field,
                descending=descending,
                include_missing=include_missing,
                hint=_hint_line,
            )
        if file == "-":
            typer.echo(text, nl=False)
        else:
            write_private(Path(file), text)


# -- sql --------------------------------------------------------------------------------------

SQL_TIMEOUT_EXIT = 124  # as GNU timeout: schedulers and scripts know it as "took too long"


@app.command()
def sql(
    query: Annotated[
        str,
        typer.Argument(
            help="One SQL statement (SELECT, WITH, ...); - reads it from stdin.", show_default=False
        ),
    ],
    db: DbOption = None,
    output: FormatOption = Format.table,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0,
            metavar="SECONDS",
            help="Stop the query after this many seconds (exit code 124); 0: no limit.",
        ),
    ] = 60,
) -> None:
    """Run one read-only SQL query on the index and print the result.

    The schema is in the README ("Database schema"). Example:
    indexer sql "SELECT modality, count(*) FROM instances GROUP BY modality"
    """
    from .db import connect
    from .reports import QueryTimeout, run_query

    if query == "-":
        query = sys.stdin.read()
    with reported_errors(), connect(db) as conn:
        try:
            result = run_query(
                conn, query, timeout=timeout, warn=lambda m: typer.echo(f"warning: {m}", err=True)
            )
        except QueryTimeout as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=SQL_TIMEOUT_EXIT) from None
    if output is Format.json:
        typer.echo(render_json(result.records()))
    elif output is Format.csv:
        typer.echo(render_csv(result.columns, result.rows), nl=False)
    else:
        typer.echo(
            render_table(result.columns, result.rows, terminal_width())
            if result.columns
            else "(no result)"
        )


# -- report -----------------------------------------------------------------------------------


@app.command()
def report(
    html: Annotated[
        Path,
        typer.Option(
            "--html", metavar="FILE", help="Write the report to this HTML file (mode 0600)."
        ),
    ],
    db: DbOption = None,
    output: FormatOption = Format.table,
    patient_values: Annotated[
        bool,
        typer.Option(
            "--patient-values",
            help="Show the common values of patient tags (names, IDs, birth dates, ...).",
        ),
    ] = False,
) -> None:
    """Write one self-contained HTML page about the index: counts, charts, errors, duplicates.

    No network fetches, no patient values unless --patient-values. Example:
    indexer report --html morning.html --db archive.db
    """
    from .db import connect, describe_url, resolve_url
    from .reports.html import write_html_report

    with reported_errors(), connect(db) as conn:
        written = write_html_report(
            conn, html, patient_values=patient_values, database=describe_url(resolve_url(db))
        )
    _print_mapping(written, output)


# -- dump -------------------------------------------------------------------------------------


class DumpFormat(str, Enum):
    text = "text"
    json = "json"


@app.command()
def dump(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="FILE", help="DICOM files.", show_default=False),
    ] = None,
    output: Annotated[
        DumpFormat,
        typer.Option("--format", "-f", metavar="FORMAT", help="text (a tree) or json (records)."),
    ] = DumpFormat.text,
    meta: Annotated[
        bool, typer.Option("--meta", help="Include the File Meta Information (0002).")
    ] = False,
    value_limit: Annotated[
        int, typer.Option(min=16, metavar="N", help="Characters of each value kept.")
    ] = 1024,
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            metavar="TAG",
            help="Only this element (a sequence with its items), like dcmdump +P: a keyword, "
            "(0010,0010) or a path such as RequestAttributesSequence.RequestedProcedureID.",
            show_default=False,
        ),
    ] = None,
    uid: Annotated[
        list[str] | None,
        typer.Option(
            "--uid",
            metavar="UID",
            help="The file of this indexed SOPInstanceUID (looked up in --db, read from disk).",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Print every element of DICOM files, with sequences, items and fragments, and the count.

    Several files get a header line each ("# FILE"); JSON is then a list. Exit 0 when every
    file was read to its end, 2 when one was read only in part, 1 when one could not be read
    (or --tag is in none of them). Examples:

    \b
    indexer dump image.dcm --meta
    indexer dump --tag PatientName a.dcm b.dcm
    indexer dump --uid 1.2.826.0.1.3680043.8.498.1 --db index.db
    """
    targets = [str(p) for p in paths or ()]
    if uid:
        from .db import connect
        from .reports.dump import indexed_files

        with reported_errors(), connect(db) as conn:
            for one in uid:
                targets.extend(indexed_files(conn, one))
    if not targets:
        typer.echo("error: give a FILE, or --uid UID of an indexed instance", err=True)
        raise typer.Exit(code=1)
    several = len(targets) > 1
    outcomes = [_dump_file(t, output, meta, value_limit, tag, several) for t in targets]
    documents = [d for _, d in outcomes if d is not None]
    if documents:
        typer.echo(render_json(documents if several else documents[0]))
    statuses = {status for status, _ in outcomes}
    if tag is not None and statuses <= {"no tag"}:
        where = "these files" if several else "the file"
        typer.echo(f"error: no element {tag} in {where}", err=True)
        raise typer.Exit(code=1)
    if "failed" in statuses:
        raise typer.Exit(code=1)
    if "partial" in statuses:
        raise typer.Exit(code=2)


def _dump_file(
    target: str, output: DumpFormat, meta: bool, value_limit: int, tag: str | None, header: bool
) -> tuple[str, dict[str, Any] | None]:
    """Dump one file: (failed, partial, no tag or read; its JSON document when asked)."""
    from .reader import read_file
    from .records import META
    from .reports.dump import tag_elements

    try:
        record = read_file(target, value_limit=value_limit)
    except IndexerError as err:
        typer.echo(f"error: {err}", err=True)
        return "failed", None
    shown = [r for r in record.elements if meta or not r.flags & META]
    if tag is not None:
        with reported_errors():
            shown = tag_elements(shown, tag)
    status = "partial" if record.problem else "read" if shown or tag is None else "no tag"
    if output is DumpFormat.json:
        return status, _dump_json(record, shown)
    if header:
        typer.echo(f"# {_CONTROL.sub(_escape, record.path)}")
    for r in shown:
        typer.echo(_dump_line(r))
    for warning in record.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if record.problem:
        typer.echo(f"problem: {record.problem}", err=True)
    if tag is None:
        typer.echo(f"{record.element_count} elements")
    return status, None


def _dump_json(record: Any, shown: list[Any]) -> dict[str, Any]:
    return {
        "path": record.path,
        "size": record.size,
        "preamble": record.preamble,
        "has_meta": record.has_meta,
        "transfer_syntax": record.transfer_syntax,
        "explicit_vr": record.explicit_vr,
        "little_endian": record.little_endian,
        "deflated": record.deflated,
        "element_count": record.element_count,
        "max_sequence_depth": record.max_depth,
        "fragment_sequences": record.fragment_sequences,
        "fragments": record.fragments,
        "problem": record.problem,
        "problem_offset": record.problem_offset,
        "warnings": record.warnings,
        "elements": [_record_json(r) for r in shown],
    }


def _record_json(r: Any) -> dict[str, Any]:
    from .records import BINARY, CUT, ENCAPSULATED, ITEM, META, PRIVATE, UNDEFINED, UNDEFINED_LENGTH

    data = {
        "path": r.path,
        "depth": r.depth,
        "tag": f"{r.tag >> 16:04X}{r.tag & 0xFFFF:04X}",
        "keyword": r.keyword,
        "name": r.name,
        "vr": r.vr,
        "vm": r.vm,
        "length": None if r.length == UNDEFINED else r.length,
        "undefined_length": bool(r.flags & UNDEFINED_LENGTH),
        "value": r.value,
        "number": r.number,
        "binary": bool(r.flags & BINARY),
        "cut": bool(r.flags & CUT),
        "item": bool(r.flags & ITEM),
        "meta": bool(r.flags & META),
        "private": bool(r.flags & PRIVATE),
        "private_creator": r.private_creator,
        "offset": r.offset,
        "flags": r.flags,
    }
    if r.flags & ENCAPSULATED:
        data["fragments"] = list(r.fragments or ())
        data["offset_table"] = list(r.offset_table or ())
    return data


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(match: re.Match[str]) -> str:
    return {"\r": "\\r", "\n": "\\n", "\t": "\\t"}.get(match[0], f"\\x{ord(match[0]):02x}")


def _dump_line(r: Any) -> str:
    from .records import BINARY, CUT, ENCAPSULATED, ITEM, UNDEFINED

    indent = "  " * (r.depth * 2 - (1 if r.flags & ITEM else 0)) if r.depth else ""
    tag = f"({r.tag >> 16:04X},{r.tag & 0xFFFF:04X})"
    if r.flags & ITEM:
        index = r.path[r.path.rfind("[") + 1 : -1]
        length = "undefined length" if r.length == UNDEFINED else f"{r.length} bytes"
        return f"{indent}Item #{index} {tag} ({length})"
    label = r.keyword or r.name
    if r.private_creator:
        label = f"{r.name} [{r.private_creator}]"
    length = "u/l" if r.length == UNDEFINED else str(r.length)
    if r.vr == "SQ":
        shown = "(sequence)"
    elif r.flags & ENCAPSULATED:
        sizes = list(r.fragments or ())
        head = ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")
        shown = (
            f"({len(sizes)} fragments: {head}; offset table {len(r.offset_table or ())} entries)"
        )
    elif r.flags & BINARY:
        shown = f"({r.length} bytes binary)"
    else:
        shown = f"[{_CONTROL.sub(_escape, r.value)}]" + (" (cut)" if r.flags & CUT else "")
    return f"{indent}{tag} {r.vr:2} {label:<36} #{length:>6},{r.vm} {shown}"


# -- forget, relocate ---------------------------------------------------------------------------


DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Say what would change; write nothing.")
]


@app.command()
def forget(
    path: Annotated[
        Path, typer.Argument(help="Folder or file to forget (may be gone).", show_default=False)
    ],
    db: DbOption = None,
    dry_run: DryRunOption = False,
    output: FormatOption = Format.table,
) -> None:
    """Remove every file under PATH from the index, e.g. a retired or unmounted archive.

    The files are not touched. Example: indexer forget /mnt/old-archive --db index.db
    """
    from .writer.roots import forget_root

    with reported_errors("write the index"):
        report = forget_root(path, db, dry_run=dry_run)
    if report.files == 0:
        typer.echo(f"nothing is indexed under {report.root}", err=True)
    _print_mapping(
        {
            "database": report.database,
            "path": report.root,
            "files to forget" if dry_run else "files forgotten": report.files,
            "instances": report.instances,
            "already missing": report.missing,
            "error rows": report.errors,
            "dry run": dry_run,
        },
        output,
    )


@app.command()
def relocate(
    old: Annotated[Path, typer.Argument(help="Where the files were indexed.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="Where the same files are now.", show_default=False)],
    db: DbOption = None,
    dry_run: DryRunOption = False,
    output: FormatOption = Format.table,
) -> None:
    """Point the index at an archive that moved from OLD to NEW, without reading it again.

    NEW must hold the same files (a sample is compared by size and modification time) and
    none of its paths may be indexed already. Example:
    indexer relocate /mnt/old /data/archive --dry-run; then without --dry-run;
    then `indexer index /data/archive` reads only what changed.
    """
    from .writer.roots import relocate_root

    with reported_errors("write the index"):
        report = relocate_root(old, new, db, dry_run=dry_run)
    _print_mapping(
        {
            "database": report.database,
            "old": report.old,
            "new": report.new,
            "files to move" if dry_run else "files moved": report.files,
            "of them missing": report.missing,
            "error rows": report.errors,
            "files sampled": report.sampled,
            "dry run": dry_run,
        },
        output,
    )


# -- serve ------------------------------------------------------------------------------------


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; other than 127.0.0.1 with care.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port; 0 picks a free one.")
    ] = 8042,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="Require 'Authorization: Bearer TOKEN', TOKEN read from FILE "
            "(or from $INDEXER_SERVE_TOKEN); never given on the command line.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the index read-only over DICOMweb: QIDO-RS search, WADO-RS metadata and retrieve.

    Prints the DICOMweb root URL, then one access-log line per request (never its query
    string) on stderr, until Ctrl-C. Examples:

    \b
    indexer serve --db archive.db --port 8042
    INDEXER_SERVE_TOKEN=s3cret indexer serve --db archive.db --port 0
    curl 'http://127.0.0.1:8042/dicomweb/studies?StudyDate=20240101-20241231&limit=10'
    """
    import os

    with reported_errors("serve the index"):
        try:
            from .serve.app import serve_index
        except ImportError:
            from .serve import INSTALL_SERVE

            raise IndexerError(f"the DICOMweb server is not installed: {INSTALL_SERVE}") from None
        token = os.environ.get("INDEXER_SERVE_TOKEN") or None
        if token_file is not None:
            try:
                token = token_file.read_text(encoding="utf-8").strip()
            except OSError as err:
                message = f"cannot read the token file {token_file}: {err.strerror}"
                raise IndexerError(message) from None
            if not token:
                raise IndexerError(f"the token file {token_file} is empty")
        access = logging.getLogger("indexer.serve.access")  # method, path, status: no query
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False

        if not token and host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(
                f"warning: listening on {host} without a token: whoever reaches it reads the index",
                err=True,
            )

        def ready(url: str) -> None:
            typer.echo(f"DICOMweb root: {url}" + ("" if token else " (no token required)"))
            sys.stdout.flush()

        serve_index(db, host=host, port=port, token=token, on_ready=ready)


# -- runs, errors ------------------------------------------------------------------------------

RUN_COLUMNS = (
    "run", "started_at", "finished_at", "duration_s", "outcome", "roots", "files_seen",
    "files_indexed", "files_unchanged", "errors", "not_dicom", "files_missing",
    "elements_written", "host",
)  # fmt: skip


@app.command()
def runs(
    db: DbOption = None,
    output: FormatOption = Format.table,
    limit: Annotated[
        int, typer.Option("--limit", min=0, metavar="N", help="The last N runs; 0: all.")
    ] = 20,
) -> None:
    """The history of `indexer index` runs, newest first: when, roots, outcome, counts.

    Example: indexer runs --limit 5; indexer runs -f json --limit 0
    """
    from .db import connect
    from .reports.runs import list_runs

    with reported_errors(), connect(db) as conn:
        rows = list_runs(conn, limit or None)
    if output is Format.table:
        typer.echo(_rows_table(_joined(rows)) if rows else "no runs")
    else:
        _print_rows(rows, output, RUN_COLUMNS)


def _joined(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lists (roots, example paths) as one table cell."""
    return [{k: ", ".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]


ERROR_GROUP_COLUMNS = ("reason", "kind", "files", "examples")
ERROR_COLUMNS = ("path", "stage", "message")


@app.command()
def errors(
    db: DbOption = None,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            "-r",
            metavar="REASON",
            help="List every path of this reason (with its stage and message).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        PathsFormat,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="table, json, csv, or paths (one path a line, for xargs).",
        ),
    ] = PathsFormat.table,
    examples: Annotated[
        int, typer.Option("--examples", min=0, metavar="N", help="Example paths per reason.")
    ] = 3,
) -> None:
    """Files not indexed whole, and crawl problems, grouped by reason with example paths.

    Prints paths and messages, never element values. Examples:

    \b
    indexer errors
    indexer errors --reason truncated
    indexer errors --reason truncated -f paths | xargs ls -l
    """
    from .db import connect
    from .reports.errors import error_reasons, errors_by_reason, errors_of_reason

    with reported_errors(), connect(db) as conn:
        rows = errors_of_reason(conn, reason) if reason else errors_by_reason(conn, examples)
        reasons = error_reasons(conn) if reason and not rows else []
    if reason and not rows:
        known = ", ".join(reasons) or "none"
        typer.echo(f"no error of reason {reason!r} (reasons in the index: {known})", err=True)
    if output is PathsFormat.paths:
        paths = [r["path"] for r in rows] if reason else [p for r in rows for p in r["examples"]]
        typer.echo("".join(f"{p}\n" for p in paths), nl=False)
    elif output is PathsFormat.table:
        typer.echo(_rows_table(_joined(rows)) if rows else "no match" if reason else "no errors")
    else:
        columns = ERROR_COLUMNS if reason else ERROR_GROUP_COLUMNS
        _print_rows(rows, Format(output.value), columns)


# -- export parquet -----------------------------------------------------------------------------


@export_app.command("parquet")
def export_parquet(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Folder of the export (created).", show_default=False),
    ],
    db: DbOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="Write every file anew, not only what changed.")
    ] = False,
    part_rows: Annotated[
        int,
        typer.Option("--part-rows", min=1, metavar="N", help="Element rows per Parquet part."),
    ] = 4_000_000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    output: FormatOption = Format.table,
) -> None:
    """Write the index as Parquet files (zstd) for DuckDB, Spark, Trino, BigQuery.

    DIR gets one folder per table, export.json (row counts, files) and duckdb.sql (views
    named like the index's tables). Run again into the same DIR, it rewrites only the
    element parts whose files changed. Example:
    indexer export parquet /data/index-parquet --db index.db; cd /data/index-parquet;
    duckdb -init duckdb.sql
    """
    from tqdm import tqdm

    from .export.parquet import export_parquet as write_export

    shown = not quiet and sys.stderr.isatty()
    bar = tqdm(unit=" rows", desc="exporting", disable=not shown, file=sys.stderr, unit_scale=True)
    with reported_errors(), bar:
        report = write_export(db, directory, full=full, part_rows=part_rows, progress=bar.update)
    per_row = report.bytes_per_element_row
    _print_mapping(
        {
            "directory": report.directory,
            "database": report.database,
            "incremental": report.incremental,
            "element rows": report.element_rows,
            "element parts written": report.parts_written,
            "element parts kept": report.parts_kept,
            "bytes": report.total_bytes,
            "bytes per element row": None if per_row is None else round(per_row, 2),
            "rows": report.tables,
            "elapsed s": round(report.seconds, 2),
        },
        output,
    )


# -- db -----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create the index schema, or bring an older one up to date."""
    from .db import describe_url, open_index, resolve_url

    with reported_errors("upgrade the index"):
        engine = open_index(db, create=True, migrate=True)
        engine.dispose()
    typer.echo(f"{describe_url(resolve_url(db))}: schema up to date")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Print the schema revision of the index and the revision this version expects."""
    from .db import current_revision, describe_url, head_revision, make_engine, resolve_url

    with reported_errors():
        url = resolve_url(db)
        engine = make_engine(url, read_only=True)
        with engine.connect() as conn:
            current = current_revision(conn)
    typer.echo(f"{describe_url(url)}: {current or 'empty'} (this indexer: {head_revision()})")


# -- helpers ------------------------------------------------------------------------------------


def _print_mapping(data: dict[str, Any], output: Format) -> None:
    """A summary: `label  value` lines for people; for scripts, the same under snake_case keys
    (one vocabulary with stats: "files seen" is files_seen)."""
    if output is not Format.table:
        data = {machine_key(k): v for k, v in data.items()}
    if output is Format.json:
        typer.echo(render_json(data))
        return
    flat = list(_flatten(data))
    if output is Format.csv:
        typer.echo(render_csv(["key", "value"], flat), nl=False)
    else:
        typer.echo(render_table(["", ""], flat, terminal_width()).split("\n", 2)[2])


def _flatten(data: dict[str, Any], prefix: str = "") -> Any:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield (f"{prefix}{key}", value)


def _warnings_on_stderr() -> None:
    """The library's warnings (logger "indexer") as one `warning: ...` line each on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("indexer")
    logger.addHandler(handler)
    logger.propagate = False


def main() -> None:
    """Console-script entry point: usage errors, like fatal ones, are one line and exit status 1."""
    # The database driver logs what it ignores while a lost connection is closed; the command
    # says what happened in one line of its own (and log lines may quote values).
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    _warnings_on_stderr()
    try:
        code = app(standalone_mode=False)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            # `indexer` or `indexer db` alone: the help (click would print it on stderr and exit
            # 2; asking for nothing is asking what there is, so stdout and 0, like --help).
            typer.echo(err.ctx.get_help())  # type: ignore[attr-defined]
            sys.exit(0)
        if hasattr(err, "format_message") and hasattr(err, "exit_code"):  # a usage error
            typer.echo(f"error: {err.format_message()}", err=True)
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)
