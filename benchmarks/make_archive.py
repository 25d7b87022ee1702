"""Build a large synthetic DICOM archive from real corpus files, fast.

Every output file is a byte copy of a real source file in which the identifying
values are overwritten *in place* with new values of exactly the same length, so
no length field changes and nothing is re-encoded:

* (0002,0003) Media Storage SOP Instance UID and (0008,0018) SOP Instance UID
  (one new UID per file, the same in both),
* (0020,000E) Series Instance UID and (0020,0052) Frame of Reference UID (per series),
* (0020,000D) Study Instance UID and (0008,0050) Accession Number (per study),
* (0010,0020) Patient ID and (0010,0010) Patient's Name (per patient).

Each source file is parsed once with pydicom to find the file offsets of those
values (top level of the data set and the meta group only). The archive has a
realistic shape (patients with 1-3 studies, studies with 1-4 series, series with
5-50 instances, one source file per series) and tree
``OUT/<patient>/<study>/<series>/<instance>``; it is deterministic for a seed.

Sources can be narrowed by size (``--max-bytes``) and by element count
(``--max-elements``/``--min-elements``: MANIFEST ``element_count`` for corpus files,
pydicom's count for a directory); the index benchmark uses small files of about a
hundred elements, so that 200,000 files take a few GB.

Run ``python benchmarks/make_archive.py OUT_DIR --files N [--sources small|all|DIR]
[--max-bytes B] [--max-elements E] [--min-elements E]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_MAX_BYTES = 64 * 1024

# Tags whose values are replaced (the meta one is looked up in the file meta group).
META_SOP = BaseTag(0x00020003)
SOP = BaseTag(0x00080018)
STUDY = BaseTag(0x0020000D)
SERIES = BaseTag(0x0020000E)
FRAME_OF_REFERENCE = BaseTag(0x00200052)
PATIENT_ID = BaseTag(0x00100020)
PATIENT_NAME = BaseTag(0x00100010)
ACCESSION = BaseTag(0x00080050)
DATASET_TAGS = (SOP, STUDY, SERIES, FRAME_OF_REFERENCE, PATIENT_ID, PATIENT_NAME, ACCESSION)

# Digit of the last UID component that keeps the UID kinds apart.
KIND_STUDY, KIND_SERIES, KIND_INSTANCE, KIND_FRAME = 1, 2, 3, 4
MIN_COUNTER_DIGITS = 10  # a generated UID holds at least 10**10 distinct counters
MIN_ID_FIELD = 4  # Patient ID / Name fields shorter than this make a source unusable
FALLBACK_UID_ROOT = "2.25"

NAME_STYLES = ("IM_{n:04d}", "{n:05d}.dcm", "{modality}.{uid}", "IMG{n:04d}.dcm")


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one value lives in a source file."""

    offset: int
    length: int
    original: str  # value without trailing NUL/space padding


@dataclass(slots=True)
class Source:
    """A usable source file: its bytes and the slots of the values to replace."""

    relpath: str
    data: bytes
    slots: dict[int, Slot]
    modality: str  # for file and folder names
    element_count: int  # pydicom, every element at every depth (Dataset.iterall)
    blank: tuple[Slot, ...] = ()  # values overwritten with spaces (too short an accession)
    reference_count: int | None = None  # MANIFEST element_count (DCMTK), for corpus sources

    @property
    def elements(self) -> int:
        """The reference element count when known, else pydicom's."""
        return self.element_count if self.reference_count is None else self.reference_count

    @property
    def bucket(self) -> tuple[int, bool]:
        """Sources of one study must agree on the Study UID field length and accession."""
        return self.slots[STUDY].length, ACCESSION in self.slots


def _slot(raw: object, data: bytes) -> Slot | None:
    """The Slot of a raw (not yet converted) element, or None if it has no usable value."""
    if not isinstance(raw, RawDataElement) or raw.value is None or raw.length == 0:
        return None
    start, length = raw.value_tell, raw.length
    if data[start : start + length] != raw.value:
        raise ValueError(f"value of {raw.tag} is not at offset {start}")
    return Slot(start, length, bytes(raw.value).rstrip(b"\0 ").decode("ascii", "replace"))


def analyse_source(path: Path, relpath: str) -> Source | str:
    """Parse one candidate source; return a Source or the reason it cannot be used."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values of real files are not our business
        return _analyse(path, relpath)


def _analyse(path: Path, relpath: str) -> Source | str:
    data = path.read_bytes()
    try:
        ds = pydicom.dcmread(path, defer_size=None)
    except Exception as exc:  # noqa: BLE001 - any reader failure disqualifies the file
        return f"pydicom cannot read it ({type(exc).__name__})"
    meta = ds.file_meta
    if META_SOP not in meta._dict:
        return "no File Meta Information with (0002,0003)"
    ts = meta.get("TransferSyntaxUID")
    if ts is not None and ts.is_deflated:
        return "deflated (values are not at file offsets)"
    try:
        slots: dict[int, Slot] = {}
        meta_slot = _slot(meta._dict[META_SOP], data)
        if meta_slot is not None:
            slots[META_SOP] = meta_slot
        for tag in DATASET_TAGS:
            if tag in ds._dict:
                slot = _slot(ds._dict[tag], data)
                if slot is not None:
                    slots[tag] = slot
    except ValueError as exc:
        return str(exc)
    missing = [
        name
        for tag, name in (
            (META_SOP, "(0002,0003)"),
            (SOP, "SOP Instance UID"),
            (STUDY, "Study UID"),
            (SERIES, "Series UID"),
        )
        if tag not in slots
    ]
    if missing:
        return "no " + ", ".join(missing)
    if slots[META_SOP].length != slots[SOP].length:
        return "(0002,0003) and (0008,0018) have different lengths"
    for tag, name in ((PATIENT_ID, "Patient ID"), (PATIENT_NAME, "Patient's Name")):
        if tag not in slots or slots[tag].length < MIN_ID_FIELD:
            return f"{name} absent or shorter than {MIN_ID_FIELD} bytes"
    blank: tuple[Slot, ...] = ()
    if ACCESSION in slots and slots[ACCESSION].length < MIN_ID_FIELD:
        blank = (slots.pop(ACCESSION),)  # too short to be unique: blanked in the outputs
    for tag in (SOP, STUDY, SERIES, FRAME_OF_REFERENCE):
        if tag in slots:
            try:
                UidMaker(slots[tag])
            except ValueError as exc:
                return str(exc)
    modality = re.sub(r"[^A-Za-z0-9]", "_", str(ds.get("Modality", "") or "OT"))
    count = sum(1 for _ in ds.iterall())
    return Source(relpath, data, slots, modality, count, blank)


def default_corpus() -> Path:
    """``INDEXER_CORPUS`` or ``../shared/corpus`` next to the repository."""
    env = os.environ.get("INDEXER_CORPUS")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "corpus").resolve()


def manifest_readable(corpus: Path) -> list[tuple[str, int, int]]:
    """(relpath, bytes, element_count) of the corpus files DCMTK and pydicom both read."""
    with open(corpus / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        (r["relpath"], int(r["bytes"]), int(r["element_count"]))
        for r in rows
        if r["readable_by_dcmtk"] == "yes" and r["readable_by_pydicom"] == "yes"
    ]


def _in_range(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def load_sources(
    sources: str,
    corpus: Path | None = None,
    max_bytes: int | None = None,
    max_elements: int | None = None,
    min_elements: int | None = None,
) -> tuple[list[Source], dict[str, str]]:
    """Usable sources and {relpath: reason} of the rejected candidates.

    ``sources`` is "small" (corpus files both readers read, <= 64 KB by default),
    "all" (the same without a size limit) or a directory whose files are all candidates.
    Files outside ``min_elements..max_elements`` are not candidates (the MANIFEST
    element count for corpus files; pydicom's count for a directory, checked after
    parsing and reported as a rejection).
    """
    reference: dict[str, int] = {}
    if sources in ("small", "all"):
        root = corpus or default_corpus()
        limit = (
            max_bytes
            if max_bytes is not None
            else (SMALL_MAX_BYTES if sources == "small" else None)
        )
        for rel, size, count in manifest_readable(root):
            if (limit is None or size <= limit) and _in_range(count, min_elements, max_elements):
                reference[rel] = count
        candidates = list(reference)
    else:
        root = Path(sources)
        if not root.is_dir():
            raise SystemExit(f"--sources: {sources!r} is neither small, all nor a directory")
        candidates = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and (max_bytes is None or p.stat().st_size <= max_bytes)
        )
    used: list[Source] = []
    rejected: dict[str, str] = {}
    for rel in candidates:
        result = analyse_source(root / rel, rel)
        if isinstance(result, str):
            rejected[rel] = result
        elif rel not in reference and not _in_range(
            result.element_count, min_elements, max_elements
        ):
            rejected[rel] = f"{result.element_count} elements, outside the requested range"
        else:
            result.reference_count = reference.get(rel)
            used.append(result)
    return used, rejected


# --------------------------------------------------------------------------- values


def _valid_component(text: str) -> bool:
    return text.isdigit() and (text == "0" or not text.startswith("0"))


class UidMaker:
    """Makes UIDs that fit a slot: leading components of the original + '.' + kind + counter.

    The UID length is the original's unpadded length when it is the slot length or
    one less (then one trailing NUL pads it), else the slot length. UIDs from one maker
    differ in the counter; UIDs of different makers or kinds can never be equal.
    """

    __slots__ = ("digits", "length", "pad", "prefix")

    def __init__(self, slot: Slot) -> None:
        self.length = (
            len(slot.original)
            if len(slot.original) in (slot.length - 1, slot.length)
            else slot.length
        )
        self.pad = slot.length - self.length
        prefix = ""
        for comp in slot.original.split("."):
            candidate = f"{prefix}.{comp}" if prefix else comp
            if not _valid_component(comp) or len(candidate) + 2 + MIN_COUNTER_DIGITS > self.length:
                break
            prefix = candidate
        if not prefix:
            prefix = FALLBACK_UID_ROOT
        self.prefix = prefix
        self.digits = self.length - len(prefix) - 2
        if self.digits < MIN_COUNTER_DIGITS:
            raise ValueError(f"UID field of {slot.length} bytes too short for new UIDs")

    def uid(self, kind: int, counter: int) -> str:
        """The UID for a counter; exactly ``self.length`` characters."""
        if counter >= 10**self.digits:
            raise OverflowError("UID counter does not fit")
        return f"{self.prefix}.{kind}{counter:0{self.digits}d}"

    def encoded(self, kind: int, counter: int) -> bytes:
        """The UID padded with NUL to the slot length."""
        return self.uid(kind, counter).encode("ascii") + b"\0" * self.pad


def encode_id(index: int, width: int) -> str:
    """``index`` as a fixed-width ID: decimal when it fits, else base 36."""
    if index < 10**width:
        return f"{index:0{width}d}"
    if index >= 36**width:
        raise OverflowError(f"{index} does not fit in {width} characters")
    chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for _ in range(width):
        index, rest = divmod(index, 36)
        out.append(chars[rest])
    return "".join(reversed(out))


def _text(value: str, length: int) -> bytes:
    """ASCII text padded with spaces to exactly ``length`` bytes."""
    raw = value.encode("ascii")
    if len(raw) > length:
        raise ValueError(f"{value!r} longer than {length}")
    return raw + b" " * (length - len(raw))


# --------------------------------------------------------------------------- plan


@dataclass(slots=True)
class Series:
    """One planned series: its source, instances and the values common to its files."""

    patient: int
    study: int  # global study counter
    index: int  # global series counter
    source: int  # index into the source list
    count: int
    first_instance: int  # global instance counter of its first file
    directory: str  # relative to the archive root
    name_style: str
    study_uid: str = ""
    series_uid: str = ""
    patient_id: str = ""
    frame_uid: str | None = None


@dataclass(slots=True)
class Plan:
    """The planned archive."""

    series: list[Series] = field(default_factory=list)
    patients: int = 0
    studies: int = 0
    files: int = 0
    pid_width: int = MIN_ID_FIELD  # Patient ID characters (padded with spaces to the field)
    name_width: int = MIN_ID_FIELD  # Patient's Name characters at most
    acc_width: int = MIN_ID_FIELD  # Accession Number characters

    def accession(self, series: Series) -> str:
        """Accession Number of the series' study."""
        return encode_id(series.study, self.acc_width)

    def patient_name(self, series: Series) -> str:
        """Patient's Name of the series' patient."""
        for name in (f"SYNTHETIC^{series.patient_id}", f"SYN^{series.patient_id}"):
            if len(name) <= self.name_width:
                return name
        return series.patient_id


def plan_archive(sources: list[Source], files: int, seed: int) -> Plan:
    """Decide the tree, the sources and the identifying values; deterministic for a seed."""
    rng = random.Random(seed)
    buckets: dict[tuple[int, bool], list[int]] = {}
    for i, src in enumerate(sources):
        buckets.setdefault(src.bucket, []).append(i)
    plan = Plan()
    study_makers: list[UidMaker] = []
    while plan.files < files:
        patient = plan.patients
        plan.patients += 1
        for s in range(rng.randint(1, 3)):
            if plan.files >= files:
                break
            first = rng.randrange(len(sources))
            members = buckets[sources[first].bucket]
            study = plan.studies
            plan.studies += 1
            study_makers.append(UidMaker(sources[first].slots[STUDY]))
            for k in range(rng.randint(1, 4)):
                if plan.files >= files:
                    break
                chosen = first if k == 0 else rng.choice(members)
                count = min(rng.randint(5, 50), files - plan.files)
                plan.series.append(
                    Series(
                        patient,
                        study,
                        len(plan.series),
                        chosen,
                        count,
                        plan.files,
                        f"ST{s + 1:02d}/SE{k + 1:03d}_{sources[chosen].modality}",
                        rng.choice(NAME_STYLES),
                    )
                )
                plan.files += count
    # Fixed widths, so that one patient's (study's) values fit every source it uses.
    plan.pid_width = min(src.slots[PATIENT_ID].length for src in sources)
    plan.name_width = min(src.slots[PATIENT_NAME].length for src in sources)
    plan.acc_width = min(
        (src.slots[ACCESSION].length for src in sources if ACCESSION in src.slots),
        default=MIN_ID_FIELD,
    )
    for series in plan.series:
        src = sources[series.source]
        series.patient_id = encode_id(series.patient, plan.pid_width)
        series.study_uid = study_makers[series.study].uid(KIND_STUDY, series.study)
        series.series_uid = UidMaker(src.slots[SERIES]).uid(KIND_SERIES, series.index)
        if FRAME_OF_REFERENCE in src.slots:
            series.frame_uid = UidMaker(src.slots[FRAME_OF_REFERENCE]).uid(KIND_FRAME, series.index)
        series.directory = f"PAT{series.patient_id}/{series.directory}"
    return plan


# --------------------------------------------------------------------------- write


@dataclass(slots=True)
class Stats:
    """What build_archive did."""

    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    write_seconds: float = 0.0
    patients: int = 0
    studies: int = 0
    series: int = 0
    elements: int = 0  # sum over the files written of their source's element count
    per_source: Counter[str] = field(default_factory=Counter)
    source_elements: dict[str, int] = field(default_factory=dict)  # relpath -> element count

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def mean_elements(self) -> float:
        """Mean element count per file written (MANIFEST counts for corpus sources)."""
        return self.elements / self.files if self.files else 0.0


def _series_template(series: Series, src: Source, plan: Plan) -> bytearray:
    """The source bytes with every per-series value already replaced."""
    buf = bytearray(src.data)
    slots = src.slots

    def put(tag: int, value: bytes) -> None:
        slot = slots[tag]
        assert len(value) == slot.length, (tag, value, slot)
        buf[slot.offset : slot.offset + slot.length] = value

    put(
        STUDY,
        series.study_uid.encode("ascii") + b"\0" * (slots[STUDY].length - len(series.study_uid)),
    )
    put(SERIES, UidMaker(slots[SERIES]).encoded(KIND_SERIES, series.index))
    if series.frame_uid is not None:
        put(
            FRAME_OF_REFERENCE,
            UidMaker(slots[FRAME_OF_REFERENCE]).encoded(KIND_FRAME, series.index),
        )
    put(PATIENT_ID, _text(series.patient_id, slots[PATIENT_ID].length))
    put(PATIENT_NAME, _text(plan.patient_name(series), slots[PATIENT_NAME].length))
    if ACCESSION in slots:
        put(ACCESSION, _text(plan.accession(series), slots[ACCESSION].length))
    for slot in src.blank:
        buf[slot.offset : slot.offset + slot.length] = b" " * slot.length
    return buf


def instance_name(series: Series, modality: str, number: int, uid: str) -> str:
    """File name of the ``number``-th (1-based) instance of a series."""
    return series.name_style.format(n=number, modality=modality, uid=uid)


def write_archive(out: Path, sources: list[Source], plan: Plan) -> Stats:
    """Write every planned file under ``out``."""
    stats = Stats(patients=plan.patients, studies=plan.studies, series=len(plan.series))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    start = time.perf_counter()
    for series in plan.series:
        src = sources[series.source]
        template = _series_template(series, src, plan)
        sop_maker = UidMaker(src.slots[SOP])
        meta, sop = src.slots[META_SOP], src.slots[SOP]
        directory = out / series.directory
        directory.mkdir(parents=True, exist_ok=True)
        dir_str = str(directory)
        for k in range(series.count):
            uid = sop_maker.uid(KIND_INSTANCE, series.first_instance + k)
            value = uid.encode("ascii") + b"\0" * sop_maker.pad
            buf = bytearray(template)
            buf[meta.offset : meta.offset + meta.length] = value
            buf[sop.offset : sop.offset + sop.length] = value
            fd = os.open(
                os.path.join(dir_str, instance_name(series, src.modality, k + 1, uid)), flags, 0o644
            )
            try:
                os.write(fd, buf)
            finally:
                os.close(fd)
            stats.bytes += len(buf)
        stats.files += series.count
        stats.elements += series.count * src.elements
        stats.per_source[src.relpath] += series.count
        stats.source_elements[src.relpath] = src.elements
    stats.write_seconds = time.perf_counter() - start
    return stats


# --------------------------------------------------------------------------- verify


def verify(out: Path, sources: list[Source], plan: Plan, samples: int, seed: int) -> list[str]:
    """Read back ``samples`` random outputs with pydicom; return the problems found."""
    rng = random.Random(seed + 1)
    problems: list[str] = []
    for _ in range(min(samples, plan.files)):
        series = rng.choice(plan.series)
        k = rng.randrange(series.count)
        src = sources[series.source]
        sop_uid = UidMaker(src.slots[SOP]).uid(KIND_INSTANCE, series.first_instance + k)
        path = out / series.directory / instance_name(series, src.modality, k + 1, sop_uid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            count = sum(1 for _ in ds.iterall())
        expected = {
            "MediaStorageSOPInstanceUID": (ds.file_meta.get("MediaStorageSOPInstanceUID"), sop_uid),
            "SOPInstanceUID": (ds.get("SOPInstanceUID"), sop_uid),
            "StudyInstanceUID": (ds.get("StudyInstanceUID"), series.study_uid),
            "SeriesInstanceUID": (ds.get("SeriesInstanceUID"), series.series_uid),
            "PatientID": (ds.get("PatientID"), series.patient_id),
            "PatientName": (ds.get("PatientName"), plan.patient_name(series)),
        }
        if ACCESSION in src.slots:
            expected["AccessionNumber"] = (ds.get("AccessionNumber"), plan.accession(series))
        if series.frame_uid is not None:
            expected["FrameOfReferenceUID"] = (ds.get("FrameOfReferenceUID"), series.frame_uid)
        for keyword, (got, want) in expected.items():
            if got is None or str(got) != want:
                problems.append(f"{path}: {keyword} {got!r} != {want!r}")
        if count != src.element_count:
            problems.append(
                f"{path}: {count} elements, source {src.relpath} has {src.element_count}"
            )
    return problems


def check_unique(sources: list[Source], plan: Plan) -> None:
    """Assert the plan's UIDs are unique and the hierarchy is consistent."""
    study_of_series: dict[str, str] = {}
    patient_of_study: dict[str, str] = {}
    sops: set[str] = set()
    for series in plan.series:
        assert study_of_series.setdefault(series.series_uid, series.study_uid) == series.study_uid
        assert patient_of_study.setdefault(series.study_uid, series.patient_id) == series.patient_id
        maker = UidMaker(sources[series.source].slots[SOP])
        for k in range(series.count):
            sops.add(maker.uid(KIND_INSTANCE, series.first_instance + k))
    assert len(study_of_series) == len(plan.series), "Series Instance UIDs not unique"
    assert len(patient_of_study) == plan.studies, "Study Instance UIDs not unique"
    assert len(sops) == plan.files, "SOP Instance UIDs not unique"


# --------------------------------------------------------------------------- main


def build_archive(
    out: Path,
    files: int,
    sources: str = "small",
    seed: int = 0,
    corpus: Path | None = None,
    max_bytes: int | None = None,
    verify_samples: int = 20,
    log: bool = True,
    max_elements: int | None = None,
    min_elements: int | None = None,
) -> Stats:
    """Build the archive and return its statistics; raises on verification failure."""
    start = time.perf_counter()
    used, rejected = load_sources(sources, corpus, max_bytes, max_elements, min_elements)
    if not used:
        raise SystemExit("no usable source file")
    if log:
        print(f"{len(used)} usable source files, {len(rejected)} rejected")
        for rel, reason in rejected.items():
            print(f"  skipped {rel}: {reason}")
    plan = plan_archive(used, files, seed)
    check_unique(used, plan)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    stats = write_archive(out, used, plan)
    stats.seconds = time.perf_counter() - start
    if verify_samples:
        problems = verify(out, used, plan, verify_samples, seed)
        if problems:
            raise SystemExit("verification failed:\n" + "\n".join(problems[:20]))
        if log:
            print(f"verified {min(verify_samples, plan.files)} random files with pydicom: OK")
    return stats


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory (created; must be empty)")
    parser.add_argument("--files", type=int, required=True, help="number of files to write")
    parser.add_argument(
        "--sources",
        default="small",
        help="small (default: corpus files <= 64 KB), all, or a directory",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="corpus root (default: $INDEXER_CORPUS or ../shared/corpus)",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="largest source file (default 65536 for 'small', else no limit)",
    )
    parser.add_argument(
        "--max-elements",
        type=int,
        default=None,
        metavar="E",
        help="only sources with at most E elements (MANIFEST element_count)",
    )
    parser.add_argument(
        "--min-elements",
        type=int,
        default=None,
        metavar="E",
        help="only sources with at least E elements (MANIFEST element_count)",
    )
    parser.add_argument(
        "--verify",
        type=int,
        default=20,
        metavar="K",
        help="read back K random files with pydicom (0: no check)",
    )
    args = parser.parse_args(argv)
    if args.files <= 0:
        parser.error("--files must be positive")
    stats = build_archive(
        args.out,
        args.files,
        args.sources,
        args.seed,
        args.corpus,
        args.max_bytes,
        args.verify,
        max_elements=args.max_elements,
        min_elements=args.min_elements,
    )
    print("sources used (files written, elements per file):")
    for rel, n in sorted(stats.per_source.items()):
        print(f"  {n:8d}  {stats.source_elements[rel]:6d}  {rel}")
    print(f"patients {stats.patients}, studies {stats.studies}, series {stats.series}")
    print(f"mean elements per file {stats.mean_elements:.1f}")
    print(
        f"files written {stats.files}, bytes {stats.bytes} ({stats.bytes / 1e9:.2f} GB), "
        f"elapsed {stats.seconds:.2f} s (writing {stats.write_seconds:.2f} s), "
        f"{stats.files_per_s:.0f} files/s "
        f"({stats.files / stats.write_seconds:.0f} files/s while writing)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
