"""The `indexer` command: a thin layer of options and printing over the library."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import __version__
from .errors import IndexerError
from .output import Format, render_csv, render_json, render_table

app = typer.Typer(
    help="Index DICOM archives into SQLite or PostgreSQL, and ask the index questions.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the index database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

DbOption = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="INDEXER_DB",
        help="Index database: a SQLite file path or a URL such as postgresql+psycopg://user@host/db "
        "[default: dicom-index.db]",
        show_envvar=True,
    ),
]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"indexer {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Index DICOM archives into SQLite or PostgreSQL, and ask the index questions."""


def _fail(err: IndexerError) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=1)


# -- index ------------------------------------------------------------------------------------


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to index.", show_default=False)],
    db: DbOption = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", "-w", min=0, help="Reader processes [default: CPU count].")
    ] = None,
    prune: Annotated[bool, typer.Option(help="Delete files gone from PATHS instead of marking them missing.")] = False,
    value_limit: Annotated[int, typer.Option(min=16, help="Characters of each value kept.")] = 1024,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
    output: Annotated[Format, typer.Option("--format", "-f", help="Summary format.")] = Format.table,
) -> None:
    """Index every DICOM file under PATHS (found by content, any file name).

    Re-runs read only new and changed files. Example: indexer index /archive --db index.db
    """
    from tqdm import tqdm

    from .api import IndexReport, index_paths

    bar = None
    if not quiet and sys.stderr.isatty():
        bar = tqdm(unit=" files", desc="indexing", dynamic_ncols=True, file=sys.stderr)

    def progress(report: IndexReport) -> None:
        if bar is None:
            return
        done = report.indexed + report.partial + report.failed + report.skipped + report.unchanged
        bar.update(done - bar.n)
        bar.set_postfix(errors=report.errors, elements=report.elements, refresh=False)

    try:
        report = index_paths([str(p) for p in paths], db, workers=workers, prune=prune,
                             value_limit=value_limit, progress=progress)
    except IndexerError as err:
        raise _fail(err) from None
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        typer.echo("interrupted: what was written so far is kept; run the same command again to finish",
                   err=True)
        raise typer.Exit(code=130) from None
    finally:
        if bar is not None:
            bar.close()
    if quiet:
        return
    summary = {
        "database": report.database,
        "run": report.run_id,
        "files seen": report.files_seen,
        "indexed": report.indexed,
        "indexed with problems": report.partial,
        "unchanged": report.unchanged,
        "errors": report.failed,
        "not DICOM (skipped)": report.skipped,
        "missing (pruned)" if prune else "missing": report.missing,
        "crawl problems": report.crawl_problems,
        "elements written": report.elements,
        "elapsed s": round(report.elapsed, 2),
        "files/s": round(report.files_per_second, 1),
    }
    _print_mapping(summary, output)
    if report.errors:
        typer.echo("see the errors table, or: indexer sql \"SELECT path, reason, message FROM errors\"",
                   err=True)


# -- stats ------------------------------------------------------------------------------------


@app.command()
def stats(db: DbOption = None, output: FormatOption = Format.table) -> None:
    """Counts of patients, studies, series, instances, files and errors. Example: indexer stats"""
    from .db import connect
    from .reports import collect_stats

    try:
        with connect(db) as conn:
            data = collect_stats(conn)
    except IndexerError as err:
        raise _fail(err) from None
    _print_mapping(data, output)


# -- dump -------------------------------------------------------------------------------------


class DumpFormat(str, Enum):
    text = "text"
    json = "json"


@app.command()
def dump(
    file: Annotated[Path, typer.Argument(help="The DICOM file.", show_default=False)],
    output: Annotated[DumpFormat, typer.Option("--format", "-f", help="text tree, or json records.")] = DumpFormat.text,
    meta: Annotated[bool, typer.Option("--meta", help="Include the File Meta Information (0002).")] = False,
    value_limit: Annotated[int, typer.Option(min=16, help="Characters of each value kept.")] = 1024,
) -> None:
    """Print every element of one file, with sequences, items and fragments, and the total count.

    Example: indexer dump image.dcm --meta
    """
    from .records import META
    from .walker import read_file

    try:
        record = read_file(file, value_limit=value_limit)
    except IndexerError as err:
        raise _fail(err) from None
    shown = [r for r in record.elements if meta or not r.flags & META]
    if output is DumpFormat.json:
        data = {
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
        typer.echo(render_json(data))
    else:
        for r in shown:
            typer.echo(_dump_line(r))
        for warning in record.warnings:
            typer.echo(f"warning: {warning}", err=True)
        if record.problem:
            typer.echo(f"problem: {record.problem}", err=True)
        typer.echo(f"{record.element_count} elements")
    if record.problem:
        raise typer.Exit(code=2)


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
        shown = f"({len(sizes)} fragments: {head}; offset table {len(r.offset_table or ())} entries)"
    elif r.flags & BINARY:
        shown = f"({r.length} bytes binary)"
    else:
        shown = f"[{r.value}]" + (" (cut)" if r.flags & CUT else "")
    return f"{indent}{tag} {r.vr:2} {label:<36} #{length:>6},{r.vm} {shown}"


# -- db -----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create the index schema, or bring an older one up to date."""
    from .db import open_index, resolve_url

    try:
        engine = open_index(db, create=True, migrate=True)
        engine.dispose()
    except IndexerError as err:
        raise _fail(err) from None
    from .db import describe_url

    typer.echo(f"{describe_url(resolve_url(db))}: schema up to date")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Print the schema revision of the index and the revision this version expects."""
    from .db import current_revision, describe_url, head_revision, make_engine, resolve_url

    url = resolve_url(db)
    try:
        engine = make_engine(url, read_only=True)
        with engine.connect() as conn:
            current = current_revision(conn)
    except IndexerError as err:
        raise _fail(err) from None
    typer.echo(f"{describe_url(url)}: {current or 'empty'} (this indexer: {head_revision()})")


# -- helpers ------------------------------------------------------------------------------------


def _print_mapping(data: dict[str, Any], output: Format) -> None:
    if output is Format.json:
        typer.echo(render_json(data))
        return
    flat = list(_flatten(data))
    if output is Format.csv:
        typer.echo(render_csv(["key", "value"], flat), nl=False)
    else:
        typer.echo(render_table(["", ""], flat).split("\n", 2)[2])


def _flatten(data: dict[str, Any], prefix: str = "") -> Any:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield (f"{prefix}{key}", value)


def main() -> None:
    """Console-script entry point."""
    app()
