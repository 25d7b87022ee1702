"""What the walker costs, against the least a pydicom user can do.

Over the same files, each variant N times (the best repeat is reported):

(a) baseline: ``pydicom.dcmread(path)`` plus a recursive loop that reads every
    element's ``.value`` (and descends into sequence items);
(b) ``indexer.reader.read_file(path)``, producing full records;
(c) ``pydicom.dcmread(path)`` alone, for context.

Elements are counted the reference way (MANIFEST.tsv ``element_count``): every
element at every depth, a sequence counts 1, group 0002 at the top level is skipped,
Pixel Data counts 1. The target is time(b) / time(a) <= 1.5. This is a report, not a
test: it always exits 0.

Run ``python benchmarks/bench_walker.py [--repeat N] [--corpus DIR]
[--files-from-archive DIR --limit K]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere

TARGET_RATIO = 1.5


@dataclass(slots=True)
class Result:
    """Best timing of one variant."""

    name: str
    files: int
    elements: int
    seconds: float
    errors: int = 0

    def line(self) -> str:
        """One report line."""
        fps = self.files / self.seconds if self.seconds else 0.0
        eps = self.elements / self.seconds if self.seconds else 0.0
        errors = f"  errors {self.errors}" if self.errors else ""
        return (
            f"{self.name:<26} files {self.files:>7}  elements {self.elements:>9}  "
            f"{self.seconds:8.3f} s  {fps:9.1f} files/s  {eps:11.0f} elements/s{errors}"
        )


def default_corpus() -> Path:
    """``INDEXER_CORPUS`` or ``../shared/corpus`` next to the repository."""
    env = os.environ.get("INDEXER_CORPUS")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "corpus").resolve()


def corpus_files(corpus: Path) -> tuple[list[str], dict[str, int]]:
    """Paths of the files DCMTK and pydicom both read, and their MANIFEST element counts."""
    with open(corpus / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        rows = [
            r
            for r in csv.DictReader(fh, delimiter="\t")
            if r["readable_by_dcmtk"] == "yes" and r["readable_by_pydicom"] == "yes"
        ]
    paths = [str(corpus / r["relpath"]) for r in rows]
    return paths, {p: int(r["element_count"]) for p, r in zip(paths, rows, strict=False)}


def archive_files(root: Path, limit: int) -> list[str]:
    """The first ``limit`` files of a directory tree, in sorted walk order."""
    out: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            out.append(os.path.join(directory, name))
            if len(out) >= limit:
                return out
    return out


def touch(ds: Dataset, top: bool = True) -> int:
    """Read every element's value, recursively; return the reference element count."""
    count = 0
    for elem in ds:
        if top and elem.tag.group == 2:
            continue
        count += 1
        value = elem.value
        if elem.VR == "SQ":
            for item in value:
                count += touch(item, False)
    return count


def baseline(path: str) -> int:
    """(a) dcmread plus a loop touching every value."""
    return touch(pydicom.dcmread(path))


def dcmread_only(path: str) -> int:
    """(c) dcmread alone (counts no element)."""
    pydicom.dcmread(path)
    return 0


def run(fn: Callable[[str], int], paths: Sequence[str]) -> tuple[float, int, int, dict[str, int]]:
    """Time ``fn`` over ``paths``: seconds, elements, errors, per-file counts."""
    counts: dict[str, int] = {}
    errors = 0
    start = time.perf_counter()
    for path in paths:
        try:
            counts[path] = fn(path)
        except Exception:  # noqa: BLE001 - a report: count failures, keep going
            errors += 1
    seconds = time.perf_counter() - start
    return seconds, sum(counts.values()), errors, counts


def load_walker() -> Callable[[str], int] | str:
    """``read_file`` wrapped to return the element count, or why it is unavailable."""
    try:
        from indexer.reader import read_file
    except Exception as exc:  # noqa: BLE001 - not written yet, or broken
        return f"indexer.reader.read_file not importable ({type(exc).__name__}: {exc})"

    def walker(path: str) -> int:
        return int(read_file(path).element_count)

    return walker


def mismatches(counts: dict[str, int], expected: dict[str, int]) -> list[str]:
    """Files whose count differs from the MANIFEST."""
    return [
        f"{p}: {n} (MANIFEST {expected[p]})"
        for p, n in counts.items()
        if p in expected and n != expected[p]
    ]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; always returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (best reported)")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--files-from-archive", type=Path, default=None, metavar="DIR")
    parser.add_argument("--limit", type=int, default=5000, help="files taken from the archive")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom's value warnings, for every variant alike

    expected: dict[str, int] = {}
    if args.files_from_archive is not None:
        paths = archive_files(args.files_from_archive, args.limit)
        print(f"{len(paths)} files from {args.files_from_archive}")
    else:
        corpus = args.corpus or default_corpus()
        paths, expected = corpus_files(corpus)
        print(f"{len(paths)} corpus files read by DCMTK and pydicom ({corpus})")
    total = sum(os.path.getsize(p) for p in paths)
    print(f"{total / 1e6:.1f} MB, repeat {args.repeat} (best of), pydicom {pydicom.__version__}")

    variants: list[tuple[str, Callable[[str], int]]] = [
        ("(c) dcmread only", dcmread_only),
        ("(a) dcmread + touch values", baseline),
    ]
    walker = load_walker()
    if isinstance(walker, str):
        print(f"skipping (b): {walker}")
    else:
        variants.append(("(b) reader.read_file", walker))

    best: dict[str, Result] = {}
    counts: dict[str, dict[str, int]] = {}
    for _ in range(max(1, args.repeat)):
        for name, fn in variants:  # interleaved, so that drifts hit every variant
            seconds, elements, errors, per_file = run(fn, paths)
            if name not in best or seconds < best[name].seconds:
                best[name] = Result(name, len(paths) - errors, elements, seconds, errors)
            counts[name] = per_file

    print()
    for name, _ in variants:
        print(best[name].line())
    a = best["(a) dcmread + touch values"]
    b = best.get("(b) reader.read_file")
    if b is not None:
        ratio = b.seconds / a.seconds
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        print(f"\nratio time(b)/time(a) = {ratio:.2f}  (target <= {TARGET_RATIO}: {verdict})")
    else:
        print(f"\nratio time(b)/time(a): n/a (target <= {TARGET_RATIO})")

    for name in ("(a) dcmread + touch values", "(b) reader.read_file"):
        if name in counts and expected:
            diff = mismatches(counts[name], expected)
            print(f"{name}: {len(diff)} file(s) whose count differs from MANIFEST.tsv")
            for line in diff[:10]:
                print(f"    {line}")
    if b is not None and "(a) dcmread + touch values" in counts:
        ca, cb = counts["(a) dcmread + touch values"], counts["(b) reader.read_file"]
        differ = [p for p in cb if p in ca and ca[p] != cb[p]]
        print(f"(b) vs (a): {len(differ)} file(s) counted differently")
        for p in differ[:10]:
            print(f"    {p}: walker {cb[p]}, baseline {ca[p]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
