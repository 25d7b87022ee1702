"""Compare every element value the indexer reads with pydicom and with DCMTK, over a whole corpus.

    python benchmarks/compare_values.py [ROOT] [--index DB] [--damaged] [--values]
                                        [--jobs N] [--examples N]

ROOT defaults to $INDEXER_CORPUS. Every file that both pydicom (``dcmread``) and DCMTK
(``dcmdump``) read is compared, element by element at every depth, File Meta group included
(with ``--damaged``, also what ``dcmdump +E`` prints of files it cannot read to the end):

* the indexer: ``indexer.read_file`` (the walker the index is built from), or with
  ``--index DB`` the rows of an index that ``index_paths`` builds (or brings up to date) at
  DB, read back from the database: what ``find`` and ``sql`` see;
* pydicom: every element of ``dcmread``, each value rendered as the indexer renders it
  (DS/IS original strings, FL/FD ``repr``, AT as GGGGEEEE, values joined by ``\\``);
* DCMTK: ``dcmdump +U8 +L +Qn -Un`` (text converted to UTF-8, long values in full, non-ASCII
  quoted as ``&#N;`` per byte so that no value can break a line); when DCMTK cannot convert a
  file's character set, the file is dumped without ``+U8`` and its non-ASCII text is a class.

Text is compared exactly (after dropping the trailing padding of the whole value, which
all three drop); binary VRs by length; binary numbers as numbers (dcmdump prints floats with
fewer digits); SQ by item count. What differs is sorted into classes, each printed with a count
and the first location (file and tag path). Values are printed only with ``--values``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue

from indexer import read_file
from indexer.errors import IndexerError
from indexer.records import BINARY, CUT, DEFAULT_VALUE_LIMIT, ITEM, UNDEFINED

SINGLE_VALUED = {"LT", "ST", "UT", "UR"}  # a backslash is text, not a separator
BINARY_NUMBERS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "??"}
SKIPPED_NAMES = {"MANIFEST.tsv", "README.md", "LICENSES.md"}

# One (Difference class, location, our value, their value) per element that differs.
Difference = tuple[str, str, str, str]


class Stored(NamedTuple):
    """One element row of an index, with what the comparison needs of an ElementRecord."""

    path: str
    tag: int
    vr: str
    vm: int
    length: int
    value: str | None
    flags: int


_engines: dict[str, Any] = {}


def stored_elements(url: str, path: Path) -> list[Stored] | None:
    """The element rows the index at `url` holds for the file, None when it holds none."""
    from sqlalchemy import create_engine, select

    from indexer.schema import elements, files, paths

    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = create_engine(url)
    with engine.connect() as connection:
        file_id = connection.execute(
            select(files.c.id).where(files.c.path == os.path.abspath(path))
        ).scalar()
        if file_id is None:
            return None
        query = (
            select(paths.c.path, paths.c.tag, elements.c.vr, elements.c.vm, elements.c.length)
            .add_columns(elements.c.value, elements.c.flags)
            .join(paths, paths.c.id == elements.c.path_id)
            .where(elements.c.file_id == file_id)
            .order_by(elements.c.ordinal)
        )
        found = [Stored(*row) for row in connection.execute(query)]
    return found or None


# -- DCMTK ---------------------------------------------------------------------------------------

_LINE = re.compile(r"^( *)\(([0-9a-f]{4}),([0-9a-f]{4})\) (\S\S) (.*)$")
_TAIL = re.compile(r"^(.*?) *# +(\d+|u/l), *(\d+) ([^#]*)$")
_ENTITY = re.compile(r"&(#\d+|amp|lt|gt|quot|apos);")
_AT = re.compile(r"^\([0-9a-f]{4},[0-9a-f]{4}\)")
# dcmdump's internal VRs: "up" a DICOMDIR offset (UL), "xs" US or SS, "ox" OB or OW, "lt" OW
# or a LUT, "??" a tag DCMTK does not know in an implicit VR stream (its bytes, as hex).
_DCMTK_VRS = {"up": ("UL",), "xs": ("US", "SS"), "ox": ("OB", "OW"), "lt": ("OW", "US", "SS")}
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


class Dumped:
    """One element as dcmdump prints it: VR, value text (None: no value printed), length, VM."""

    __slots__ = ("length", "text", "vm", "vr")

    def __init__(self, vr: str, text: str | None, length: int, vm: int) -> None:
        self.vr, self.text, self.length, self.vm = vr, text, length, vm


def _unquote(text: str, utf8: bool) -> str:
    """Undo +Qn: each non-ASCII byte and each control character is printed as &#N;."""
    if "&" not in text:
        return text
    raw = _ENTITY.sub(lambda m: _NAMED.get(m[1]) or chr(int(m[1][1:])), text).encode("latin-1")
    return raw.decode("utf-8", "replace") if utf8 else raw.decode("latin-1")


def dcmdump(path: Path, damaged: bool = False) -> tuple[dict[str, Dumped] | None, bool]:
    """Tag path -> element for one file, and whether its text was converted to UTF-8.

    None when DCMTK does not read the file; with `damaged`, what dcmdump's ``+E`` prints of a
    file it cannot read to the end (a cut value is filled with NULs, dropped as padding).
    Very long values (over 1 MB: pixel data) are not loaded (``-M +R 1024``): they print
    their length, which is all that is compared for them.
    """
    # +uc: an explicit UN of a known tag is read with its dictionary VR, as the indexer does.
    base = ["dcmdump", "-q", "+L", "+Qn", "-Un", "+uc", "-M", "+R", "1024"]
    if damaged:
        base.append("+E")
    for utf8 in (True, False):
        done = subprocess.run(
            [*base, *(["+U8"] if utf8 else []), str(path)], capture_output=True, check=False
        )
        if done.returncode == 0 or (damaged and b"# Dicom-Data-Set" in done.stdout):
            found = parse_dcmdump(done.stdout.decode("latin-1"), utf8)
            if found:
                return found, utf8
    return None, False


def parse_dcmdump(output: str, utf8: bool) -> dict[str, Dumped]:
    """Parse dcmdump's indented dump into tag paths of the indexer's form."""
    found: dict[str, Dumped] = {}
    prefixes = [""]  # the path prefix of each depth
    last_sequence: dict[int, str] = {}
    items: dict[int, int] = {}
    for line in output.splitlines():
        head = _LINE.match(line)
        if head is None:
            continue  # "#" comments and blank lines
        indent, group, element, vr, rest = head.groups()
        tail = _TAIL.match(rest)
        if tail is None:
            continue
        value, length, vm = tail[1], tail[2], int(tail[3])
        tag = f"({group.upper()},{element.upper()})"
        depth, in_item = divmod(len(indent), 4)
        if tag == "(FFFE,E000)":
            if vr == "pi":  # a fragment of encapsulated pixel data, not an item
                continue
            parent = last_sequence.get(depth, "")
            index = items[depth] = items.get(depth, -1) + 1
            del prefixes[depth + 1 :]
            prefixes.append(f"{parent}[{index}].")
            found[f"{parent}[{index}]"] = Dumped("", None, 0, 0)
            continue
        if tag in ("(FFFE,E00D)", "(FFFE,E0DD)") or in_item:
            continue
        del prefixes[depth + 1 :]
        path = prefixes[depth] + tag
        if vr == "SQ":
            last_sequence[depth] = path
            items[depth] = -1
            text: str | None = None
        elif value.startswith("[") and value.endswith("]"):
            text = _unquote(value[1:-1], utf8)
        elif _AT.match(value):
            text = value
        elif value.startswith("("):  # (no value available), (not loaded), (PixelSequence #=2)
            text = "" if value == "(no value available)" else None
        else:
            text = _unquote(value, utf8)
        found[path] = Dumped(vr, text, UNDEFINED if length == "u/l" else int(length), vm)
    return found


# -- pydicom --------------------------------------------------------------------------------------


def pydicom_elements(path: Path) -> dict[str, DataElement | None]:
    """Tag path -> element (None for an item), File Meta group first, at every depth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        found: dict[str, DataElement | None] = {}
        for elem in ds.file_meta:
            found[f"({elem.tag.group:04X},{elem.tag.element:04X})"] = elem
        _walk(ds, "", found)  # elements are converted while iterated: under catch_warnings too
    return found


def _walk(ds: pydicom.Dataset, prefix: str, found: dict[str, DataElement | None]) -> None:
    for elem in ds:
        path = f"{prefix}({elem.tag.group:04X},{elem.tag.element:04X})"
        found.setdefault(path, elem)  # a stray (0002,xxxx) in the data set: the meta one is kept
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                found[f"{path}[{index}]"] = None
                _walk(item, f"{path}[{index}].", found)


def pydicom_values(vr: str, elem: DataElement) -> list[str]:
    """pydicom's values rendered as the indexer renders them."""
    value = elem.value
    if isinstance(value, (MultiValue, list, tuple)):
        values = list(value)
    elif value is None or value == "" or value == b"":
        values = []
    else:
        values = [value]
    return [_pydicom_text(vr, v) for v in values]


def _pydicom_text(vr: str, value: Any) -> str:
    if vr in ("DS", "IS"):
        original = getattr(value, "original_string", None)
        return original if isinstance(original, str) else str(value)
    if vr in ("FL", "FD"):
        return repr(float(value))
    if vr == "AT":
        return f"({int(value) >> 16:04X},{int(value) & 0xFFFF:04X})"
    return str(value)


# -- comparison -----------------------------------------------------------------------------------


def our_values(vr: str, value: str | None) -> list[str]:
    if not value:
        return []
    return [value] if vr in SINGLE_VALUED else value.split("\\")


def _numbers_equal(ours: list[str], theirs: list[str], relative: float) -> bool:
    try:
        return len(ours) == len(theirs) and all(
            math.isclose(float(a), float(b), rel_tol=relative, abs_tol=1e-300)
            or (math.isnan(float(a)) and math.isnan(float(b)))
            for a, b in zip(ours, theirs, strict=True)
        )
    except ValueError:
        return False


def classify_text(vr: str, ours: list[str], theirs: list[str], cut: bool) -> str | None:
    """None when equal, else the class of the difference (its likely reason)."""
    if ours == theirs:
        return None
    joined_ours, joined_theirs = "\\".join(ours), "\\".join(theirs)
    if cut:
        if joined_theirs.startswith(joined_ours) or len(joined_ours) >= DEFAULT_VALUE_LIMIT:
            return "cut at the indexer's value limit (flagged CUT)"
        return "cut value differs from the start of the whole value"
    if [v.strip(" ") for v in ours] == [v.strip(" ") for v in theirs]:
        return "differs only by spaces around one of several values"
    if [v.rstrip(" \x00") for v in ours] == [v.rstrip(" \x00") for v in theirs]:
        return "differs only by padding at the end of one of several values"
    if "\x1b" in joined_ours or "\x1b" in joined_theirs:
        return (
            f"escape sequence left in the text ({'ours' if chr(27) in joined_ours else 'theirs'})"
        )
    if vr == "PN" and joined_ours.rstrip("=") == joined_theirs.rstrip("="):
        return "PN trailing '=' (empty component groups)"
    if vr in ("DS", "IS", *BINARY_NUMBERS) and _numbers_equal(ours, theirs, 1e-6):
        return "same numbers, written differently"
    if len(ours) != len(theirs):
        return "number of values differs"
    if "\ufffd" in joined_ours or "\ufffd" in joined_theirs:
        return "undecodable bytes (U+FFFD) on one side"
    return "value text differs"


def compare_file(
    root: Path, path: Path, url: str | None = None, damaged: bool = False
) -> tuple[str, Counter[str], list[Difference]]:
    """Compare one file (with the rows of the index at `url` if given; with `damaged`, also
    a file DCMTK reads only with +E); returns (status, counters, differences)."""
    relpath = str(path.relative_to(root))
    counts: Counter[str] = Counter()
    records: list[Any]
    if url is None:
        try:
            records = read_file(path).elements
        except IndexerError:
            return "not DICOM for the indexer", counts, []
    else:
        stored = stored_elements(url, path)
        if stored is None:
            return "not DICOM for the indexer", counts, []
        records = stored
    try:
        theirs_py = pydicom_elements(path)
    except Exception:  # any failure of pydicom means "pydicom does not read it"
        return "not read by pydicom", counts, []
    status = "compared"
    dumped, utf8 = dcmdump(path)
    if dumped is None and damaged:
        dumped, utf8 = dcmdump(path, damaged=True)
        status = "compared, DCMTK reading a damaged file (+E)"
    if dumped is None:
        return "not read by DCMTK", counts, []
    differences: list[Difference] = []
    ours = {r.path: r for r in records}
    for name, theirs in (("pydicom", theirs_py), ("dcmtk", dumped)):
        for missing in sorted(theirs.keys() - ours.keys()):
            if name == "dcmtk" and utf8 and missing == "(0008,0005)":
                continue  # added by +U8 (see below)
            kind = "item" if missing.endswith("]") else "element"
            differences.append(
                (f"{name}: {kind} the indexer does not have", f"{relpath} {missing}", "", "")
            )
        for extra in sorted(ours.keys() - theirs.keys()):
            kind = "item" if extra.endswith("]") else "element"
            differences.append(
                (f"{name}: {kind} only the indexer has", f"{relpath} {extra}", "", "")
            )
    for path_text, r in ours.items():
        if r.flags & ITEM:
            continue
        where = f"{relpath} {path_text}"
        counts["elements"] += 1
        elem = theirs_py.get(path_text)
        if elem is not None:
            counts["pydicom compared"] += 1
            found = _against_pydicom(r, elem)
            if found is None:
                counts["pydicom equal"] += 1
            else:
                differences.append((f"pydicom: {found[0]}", where, found[1], found[2]))
        dump = dumped.get(path_text)
        if dump is not None:
            counts["dcmtk compared"] += 1
            found = _against_dcmtk(r, dump, utf8)
            if found is None:
                counts["dcmtk equal"] += 1
            else:
                differences.append((f"dcmtk: {found[0]}", where, found[1], found[2]))
    return status, counts, differences


def _against_pydicom(r: Any, elem: DataElement) -> tuple[str, str, str] | None:
    vr = elem.VR
    if vr == "SQ" or r.vr == "SQ":
        if vr != r.vr:
            return f"VR {r.vr} read as {vr}", "", ""
        return None if r.vm == 1 else ("SQ VM", str(r.vm), "1")
    if r.flags & BINARY or vr in BINARY_VRS:
        if not r.flags & BINARY:
            return f"{r.vr} text here, binary {vr} in pydicom", r.value or "", ""
        if r.length == UNDEFINED:
            return None if elem.is_undefined_length else ("undefined length", "", "")
        size = len(elem.value or b"")
        return None if r.length == size else (f"{vr} length differs", str(r.length), str(size))
    if r.vr != vr and len(vr) == 2:
        return f"VR {r.vr} here, {vr} in pydicom", r.value or "", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = pydicom_values(r.vr, elem)
    except Exception:
        return f"pydicom cannot convert the {r.vr} value", r.value or "", ""
    kind = classify_text(r.vr, our_values(r.vr, r.value), theirs, bool(r.flags & CUT))
    return None if kind is None else (f"{kind} [{r.vr}]", r.value or "", "\\".join(theirs))


def _against_dcmtk(r: Any, dump: Dumped, utf8: bool) -> tuple[str, str, str] | None:
    if utf8 and r.tag == 0x00080005:
        return "(0008,0005) rewritten or added by +U8 (it names UTF-8, not the file's set)", "", ""
    if dump.vr in _DCMTK_VRS and r.vr in _DCMTK_VRS[dump.vr]:
        dump = Dumped(r.vr, dump.text, dump.length, dump.vm)
    if dump.vr == "??" and not r.flags & BINARY:
        return (
            "implicit VR private tag: the indexer takes its VR from its private dictionary, DCMTK does not know it (??)",
            "",
            "",
        )
    if r.vr == "SQ" or dump.vr == "SQ":
        if r.vr != dump.vr and dump.vr == "UN":
            return (
                "stored as UN: the indexer reads it with its dictionary's VR, DCMTK keeps UN",
                "",
                "",
            )
        return None if r.vr == dump.vr else (f"VR {r.vr} here, {dump.vr} in DCMTK", "", "")
    if r.flags & BINARY or dump.vr in BINARY_VRS:
        if not r.flags & BINARY and dump.vr == "UN":
            return (
                "stored as UN: the indexer reads it with its dictionary's VR, DCMTK keeps UN",
                "",
                "",
            )
        if not r.flags & BINARY:
            return f"{r.vr} text here, binary {dump.vr} in DCMTK", r.value or "", ""
        if r.length == dump.length:
            return None
        if r.length % 2 and dump.length == r.length + 1:
            return "odd length, reported padded to even by DCMTK", str(r.length), str(dump.length)
        return f"{dump.vr} length differs", str(r.length), str(dump.length)
    if dump.text is None:
        return "value not printed by dcmdump", r.value or "", ""
    if r.vr != dump.vr:
        return f"VR {r.vr} here, {dump.vr} in DCMTK", r.value or "", dump.text
    ours = our_values(r.vr, r.value)
    theirs = our_values(r.vr, dump.text.rstrip(" \x00"))
    if r.vr in BINARY_NUMBERS:
        if r.flags & CUT:
            ours, theirs = (
                ours[:-1],
                theirs[: max(len(ours) - 1, 0)],
            )  # the last kept may be partial
        if _numbers_equal(ours, theirs, 1e-6 if r.vr == "FL" else 1e-9):
            return None
    if r.vr == "AT":
        theirs = [t.upper() for t in theirs]
    kind = classify_text(r.vr, ours, theirs, bool(r.flags & CUT))
    if kind is not None and not utf8 and any(ord(c) > 127 or c == "\x1b" for c in dump.text):
        kind = "DCMTK cannot convert this character set (text left as stored)"
    return None if kind is None else (f"{kind} [{r.vr}]", r.value or "", dump.text)


# -- the run --------------------------------------------------------------------------------------


def corpus_files(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if name not in SKIPPED_NAMES:
                yield Path(folder) / name


def _job(
    args: tuple[Path, Path, str | None, bool],
) -> tuple[str, Counter[str], list[Difference]]:
    return compare_file(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=os.environ.get("INDEXER_CORPUS"))
    parser.add_argument(
        "--values", action="store_true", help="print the two values of each example"
    )
    parser.add_argument(
        "--index", metavar="DB", help="build or update an index at DB; compare its rows"
    )
    parser.add_argument(
        "--damaged",
        action="store_true",
        help="also compare files DCMTK reads only with +E (truncated or broken files)",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=1, help="locations shown per class")
    args = parser.parse_args(argv)
    if not args.root:
        parser.error("give ROOT or set INDEXER_CORPUS")
    root = Path(args.root)
    started = time.perf_counter()
    url = None
    if args.index:
        from indexer import index_paths, resolve_url
        from indexer.db import describe_url

        report = index_paths([root], args.index)
        url = resolve_url(args.index)
        print(
            f"index {describe_url(url)}: {report.indexed + report.partial} files indexed, {report.unchanged} unchanged"
        )
    files = [(root, p, url, args.damaged) for p in corpus_files(root)]
    statuses: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    class_files: dict[str, set[str]] = {}
    examples: dict[str, list[Difference]] = {}
    skipped: list[str] = []
    pool = Pool(args.jobs) if args.jobs > 1 else None
    results = pool.imap(_job, files, chunksize=4) if pool else map(_job, files)
    try:
        for (_root, path, _url, _damaged), (status, counts, differences) in zip(
            files, results, strict=True
        ):
            statuses[status] += 1
            if not status.startswith("compared"):
                skipped.append(f"{status}: {path.relative_to(root)}")
            totals.update(counts)
            for difference in differences:
                classes[difference[0]] += 1
                class_files.setdefault(difference[0], set()).add(difference[1].rsplit(" ", 1)[0])
                kept = examples.setdefault(difference[0], [])
                if len(kept) < args.examples:
                    kept.append(difference)
    finally:
        if pool:
            pool.close()
    print(
        f"files found: {len(files)}; " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    )
    for line in sorted(skipped):
        print(f"  not compared, {line}")
    print(f"elements (the indexer's, items excluded): {totals['elements']}")
    for name in ("pydicom", "dcmtk"):
        compared, equal = totals[f"{name} compared"], totals[f"{name} equal"]
        print(f"{name}: elements compared {compared}, equal {equal}, differ {compared - equal}")
    print("differences by class (count, first location):")
    for kind, count in sorted(classes.items(), key=lambda kv: (kv[0].split(":")[0], -kv[1], kv[0])):
        for _kind, where, ours, theirs in examples[kind]:
            files_with = len(class_files[kind])
            print(f"  {count:7d}  {kind}  in {files_with} file(s), first at {where}")
            if args.values:
                print(f"           indexer value: {ours!r}\n           other value:   {theirs!r}")
    print(f"took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
