"""`indexer serve`: the real server as a subprocess on 127.0.0.1 (port 0), asked by the real
dicomweb-client, on SQLite and PostgreSQL: QIDO-RS searches with filters at each level,
WADO-RS metadata equal to pydicom's DICOM JSON of the same files, retrieved instances
byte-identical to the files, the bearer token, 400s, the read-only index, the access log."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import sqlalchemy as sa
from dicomweb_client.api import DICOMwebClient
from helpers import DB_KINDS, fresh_database, pg_database, server_for

from indexer.backends.read_only import make_read_only
from indexer.db import connect, open_index
from indexer.reports import find
from indexer.run import index_paths

REPO = Path(__file__).resolve().parent.parent
GE_STUDY = "1.2.840.113619.6.408.28831229784644470934771902094312156645"
SIEMENS_FILE = "dcm_qa_nih/20180918Si/mr_0003/epi_pe_ap-00001.dcm"
RTPLAN_FILE = "pydicom/rtplan.dcm"


@dataclass
class Server:
    root: str
    process: subprocess.Popen[str]
    data: Path
    url: str = ""

    def client(self, token: str | None = None) -> DICOMwebClient:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return DICOMwebClient(url=self.root, headers=headers)

    def stop(self) -> str:
        """Stop the server (SIGTERM); its stderr (the access log)."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=20)
        return err


def start_server(db: str, *extra: str, env: dict[str, str] | None = None, data: Path) -> Server:
    command = [sys.executable, "-c", "from indexer.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, "--db", db, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("DICOMweb root: http://127.0.0.1:"):
        process.kill()
        raise AssertionError(f"no root URL printed: {line!r} {process.communicate()[1]!r}")
    return Server(line.split()[2], process, data, db)


@pytest.fixture(scope="module", params=DB_KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The server over an index of a copy of tests/data, once per module and database kind."""
    data = tmp_path_factory.mktemp("serve") / "data"
    shutil.copytree(REPO / "tests" / "data", data)
    if request.param == "sqlite":
        url = f"sqlite:///{data.parent}/index.db"
        index_paths([data], url, workers=1)
        running = start_server(url, data=data)
        yield running
        running.stop()
        return
    with pg_database(request.getfixturevalue("pg_url")) as url:
        index_paths([data], url, workers=1)
        running = start_server(url, data=data)
        yield running
        running.stop()


def values(datasets: list[dict[str, Any]], tag: str) -> list[Any]:
    return sorted(str(d[tag]["Value"][0]) for d in datasets if d.get(tag, {}).get("Value"))


def manifest_rows() -> list[dict[str, str]]:
    import csv

    with open(REPO / "tests" / "data" / "MANIFEST.tsv", encoding="utf-8") as fh:
        return [
            r
            for r in csv.DictReader(fh, delimiter="\t")
            if r["study_uid"]
            and r["readable_by_pydicom"] == "yes"
            and not r["relpath"].startswith("broken/")
        ]


# -- QIDO-RS ------------------------------------------------------------------------------------


def test_study_search_with_filters(server: Server) -> None:
    client = server.client()
    dev = client.search_for_studies(search_filters={"PatientID": "DEV"})
    expected = sorted({r["study_uid"] for r in manifest_rows() if r["patient_id"] == "DEV"})
    assert values(dev, "0020000D") == expected and len(expected) == 2
    for study in dev:  # the attributes PS3.18 requires at study level, counts from the hierarchy
        for tag in (
            "00080020",
            "00080050",
            "00080061",
            "00100010",
            "00100020",
            "00201206",
            "00201208",
            "00081190",
        ):
            assert tag in study
        assert study["00080061"]["Value"] == ["MR"]
    ge = next(s for s in dev if s["0020000D"]["Value"] == [GE_STUDY])
    assert ge["00201206"]["Value"] == [2] and ge["00201208"]["Value"] == [3]
    assert ge["00081190"]["Value"] == [f"{server.root}/studies/{GE_STUDY}"]
    assert (
        values(client.search_for_studies(search_filters={"PatientID": "DE?"}), "0020000D")
        == expected
    )
    assert (
        values(
            client.search_for_studies(
                search_filters={"StudyDate": "20180101-20181231", "ModalitiesInStudy": "MR"}
            ),
            "0020000D",
        )
        == expected
    )
    assert client.search_for_studies(search_filters={"StudyDate": "20190101-"}) == [] or all(
        s["00080020"]["Value"][0] >= "20190101"
        for s in client.search_for_studies(search_filters={"StudyDate": "20190101-"})
    )
    listed = client.search_for_studies(search_filters={"StudyInstanceUID": ",".join(expected)})
    assert values(listed, "0020000D") == expected
    names = client.search_for_studies(
        search_filters={"PatientName": "osterman*"}, fuzzymatching=True
    )
    assert len(names) == 1 and names[0]["00100010"]["Value"][0]["Alphabetic"].startswith("Osterman")
    everything = client.search_for_studies()
    with connect(server.url) as conn:  # every study `indexer find studies` lists, in its order
        listed_by_find = [r["study_instance_uid"] for r in find(conn, "studies")]
    assert [s["0020000D"]["Value"][0] for s in everything] == listed_by_find
    first, second = client.search_for_studies(limit=1), client.search_for_studies(limit=1, offset=1)
    assert len(first) == len(second) == 1 and first != second
    assert [s["0020000D"] for s in everything[:2]] == [first[0]["0020000D"], second[0]["0020000D"]]


def test_series_and_instance_search(server: Server) -> None:
    client = server.client()
    series = client.search_for_series(GE_STUDY)
    assert len(series) == 2 and {s["00080060"]["Value"][0] for s in series} == {"MR"}
    counts = sorted(s["00201209"]["Value"][0] for s in series)
    assert counts == [1, 2]
    two = next(s for s in series if s["00201209"]["Value"] == [2])
    series_uid = two["0020000E"]["Value"][0]
    instances = client.search_for_instances(GE_STUDY, series_uid)
    expected = sorted(
        r["sop_instance_uid"] for r in manifest_rows() if r["series_uid"] == series_uid
    )
    assert values(instances, "00080018") == expected
    for tag in ("00080016", "00080018", "00200013", "00280010", "00280011", "00280100", "00081190"):
        assert tag in instances[0]
    numbered = client.search_for_instances(
        GE_STUDY, series_uid, search_filters={"InstanceNumber": "2"}
    )
    assert len(numbered) == 1
    # every series of MR, any study; and instances by a numeric range on a non-hierarchy tag
    mr = client.search_for_series(search_filters={"Modality": "MR"})
    assert len(mr) == len({r["series_uid"] for r in manifest_rows() if r["modality"] == "MR"})
    big = client.search_for_instances(search_filters={"Rows>": "128"}, fields=["Rows"])
    assert big and all(i["00280010"]["Value"][0] >= 128 for i in big)
    small = client.search_for_instances(search_filters={"Rows": "0-64"}, fields=["Rows"])
    assert all(i["00280010"]["Value"][0] <= 64 for i in small)
    assert {i["00080018"]["Value"][0] for i in big}.isdisjoint(
        {i["00080018"]["Value"][0] for i in small}
    )


def test_sequence_and_private_matching(server: Server) -> None:
    client = server.client()
    plan = client.search_for_instances(
        search_filters={"DoseReferenceSequence.DoseReferenceType": "TARGET"}
    )
    rtplan = next(r for r in manifest_rows() if r["relpath"] == RTPLAN_FILE)
    assert set(values(plan, "00080018")) == {rtplan["sop_instance_uid"]}  # and its truncated copy
    assert client.search_for_instances(
        search_filters={"FractionGroupSequence.NumberOfFractionsPlanned": "20-40"}
    )
    assert (
        client.search_for_instances(
            search_filters={"FractionGroupSequence.NumberOfFractionsPlanned": "31-40"}
        )
        == []
    )
    assert (
        client.search_for_instances(
            search_filters={"DoseReferenceSequence.DoseReferenceType": "NOPE"}
        )
        == []
    )
    siemens = next(r for r in manifest_rows() if r["relpath"] == SIEMENS_FILE)
    key = '(0029,"SIEMENS CSA HEADER",08)'
    found = client.search_for_instances(search_filters={key: "IMAGE NUM 4"}, fields=[key])
    assert values(found, "00080018") == [siemens["sop_instance_uid"]]
    assert found[0]["00291008"] == {"vr": "CS", "Value": ["IMAGE NUM 4"]}  # returned, by its block
    assert client.search_for_instances(search_filters={key: "IMAGE NUM 5"}) == []
    everything = client.search_for_instances(
        search_filters={"SOPInstanceUID": siemens["sop_instance_uid"]}, fields=["all"]
    )
    assert len(everything) == 1 and "00291010" in everything[0] and "00180087" in everything[0]


def test_bad_requests_get_400(server: Server) -> None:
    for query in (
        "Modalty=MR",
        "limit=ten",
        "PatientName>=B",
        "Rows=abc",
        "includefield=NoSuchThing",
    ):
        answer = requests.get(f"{server.root}/instances?{query}", timeout=10)
        assert answer.status_code == 400, query
        assert answer.headers["Warning"].startswith("299 ")
        assert "Traceback" not in answer.text and answer.text.count("\n") == 1
    assert requests.get(f"{server.root}/studies/1.2.3/metadata", timeout=10).status_code == 404
    assert (
        requests.get(
            f"{server.root}/studies/1.2.3/series/4.5/instances/6.7", timeout=10
        ).status_code
        == 404
    )


# -- WADO-RS ------------------------------------------------------------------------------------


def without_uris(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ("bulk" if k == "BulkDataURI" else without_uris(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [without_uris(v) for v in node]
    return node


def test_metadata_equals_pydicom(server: Server) -> None:
    client = server.client()
    with connect(server.url) as conn:
        held = Counter(r["sop_instance_uid"] for r in find(conn, "instances"))
    compared = 0
    for row in manifest_rows():
        if held[row["sop_instance_uid"]] > 1:
            continue  # several files hold this SOP Instance UID (a truncated copy in tests/data)
        path = server.data / row["relpath"]
        theirs = pydicom.dcmread(path).to_json_dict(
            bulk_data_threshold=0, bulk_data_element_handler=lambda _e: "bulk"
        )
        ours = client.retrieve_instance_metadata(
            row["study_uid"], row["series_uid"], row["sop_instance_uid"]
        )
        assert without_uris(ours) == theirs, row["relpath"]
        compared += 1
    assert compared >= 10  # every other tests/data file with a unique SOP Instance UID
    series = client.retrieve_series_metadata(
        GE_STUDY, next(r["series_uid"] for r in manifest_rows() if r["study_uid"] == GE_STUDY)
    )
    assert series and all(s["0020000D"]["Value"] == [GE_STUDY] for s in series)
    assert len(client.retrieve_study_metadata(GE_STUDY)) == 3


def test_bulk_data_uri_gives_the_value(server: Server) -> None:
    row = next(r for r in manifest_rows() if r["relpath"] == SIEMENS_FILE)
    client = server.client()
    meta = client.retrieve_instance_metadata(
        row["study_uid"], row["series_uid"], row["sop_instance_uid"]
    )
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(server.root + "/studies/")
    (value,) = client.retrieve_bulkdata(uri)
    assert value == pydicom.dcmread(server.data / SIEMENS_FILE).PixelData


def test_retrieve_is_byte_identical(server: Server) -> None:
    client = server.client()
    rows = [r for r in manifest_rows() if r["study_uid"] == GE_STUDY]
    by_bytes = {(server.data / r["relpath"]).read_bytes() for r in rows}
    url = f"{server.root}/studies/{GE_STUDY}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    answer = requests.get(url, headers={"Accept": accept}, timeout=30)
    assert answer.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    parts = list(client._decode_multipart_message(answer, stream=False))  # the client's own parser
    assert len(parts) == 3 and {bytes(p) for p in parts} == by_bytes
    one = rows[0]
    instance = client.retrieve_instance(
        one["study_uid"], one["series_uid"], one["sop_instance_uid"]
    )
    assert instance.SOPInstanceUID == one["sop_instance_uid"]
    series = client.retrieve_series(one["study_uid"], one["series_uid"])
    assert sorted(s.SOPInstanceUID for s in series) == sorted(
        r["sop_instance_uid"] for r in rows if r["series_uid"] == one["series_uid"]
    )


# -- safety -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DB_KINDS)
def test_token_changed_files_and_access_log(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(REPO / "tests" / "data" / "dcm_qa_nih" / "20180918GE", data)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with fresh_database(kind, tmp_path, server_for(request, kind)) as url:
        index_paths([data], url, workers=1)
        running = start_server(url, "--token-file", str(token_file), data=data)
        try:
            with pytest.raises(requests.HTTPError) as refused:
                running.client().search_for_studies(search_filters={"PatientID": "DEV"})
            assert refused.value.response.status_code == 401
            with pytest.raises(requests.HTTPError):
                running.client("wrong").search_for_studies()
            client = running.client("s3cret-token")
            assert len(client.search_for_studies(search_filters={"PatientID": "DEV"})) == 1
            # a file changed since indexing is refused, the others still served
            changed = data / "mr_0005" / "axial_epi_fmri_sequential_i_to_s-00001.dcm"
            os.utime(changed, ns=(time.time_ns(), time.time_ns()))
            (study,) = client.search_for_studies()
            uid = study["0020000D"]["Value"][0]
            answer = requests.get(
                f"{running.root}/studies/{uid}",
                headers={"Authorization": "Bearer s3cret-token"},
                timeout=10,
            )
            assert answer.status_code == 409 and "changed" in answer.text
            for s in client.search_for_series(uid):
                if s["00201209"]["Value"] == [2]:
                    assert len(client.retrieve_series(uid, s["0020000E"]["Value"][0])) == 2
        finally:
            log = running.stop()
    assert "GET /dicomweb/studies 401" in log and "GET /dicomweb/studies 200" in log
    assert "DEV" not in log and "PatientID" not in log and "?" not in log and "Traceback" not in log
    # the token comes from the environment too, never from the command line
    with fresh_database(kind, tmp_path, server_for(request, kind)) as url:
        index_paths([data], url, workers=1)
        running = start_server(url, env={"INDEXER_SERVE_TOKEN": "from-env"}, data=data)
        try:
            assert requests.get(f"{running.root}/studies", timeout=10).status_code == 401
            assert running.client("from-env").search_for_studies()
        finally:
            running.stop()


@pytest.mark.parametrize("kind", DB_KINDS)
def test_index_is_opened_read_only(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with fresh_database(kind, tmp_path, server_for(request, kind)) as url:
        index_paths([REPO / "tests" / "data" / "pydicom" / "rtplan.dcm"], url, workers=1)
        engine = make_read_only(open_index(url, create=False))
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT COUNT(*) FROM files")).scalar() == 1
                with pytest.raises(sa.exc.DBAPIError, match="(?i)read.only|readonly"):
                    conn.execute(sa.text("DELETE FROM files"))
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT COUNT(*) FROM files")).scalar() == 1
        finally:
            engine.dispose()


def test_missing_extra_and_bad_options_are_one_line(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from indexer.cli import main; main()", "serve", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )

    gone = serve("--db", str(tmp_path / "none.db"), "--port", "0")
    assert (
        gone.returncode == 1
        and gone.stderr.startswith("error: no index at")
        and "Traceback" not in gone.stderr
    )
    empty = tmp_path / "empty-token"
    empty.write_text("")
    refused = serve("--db", str(tmp_path / "none.db"), "--token-file", str(empty))
    assert (
        refused.returncode == 1
        and "token file" in refused.stderr
        and "Traceback" not in refused.stderr
    )


def _compare_metadata() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compare_metadata", REPO / "benchmarks" / "compare_metadata.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_metadata"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# The corpus files (outside broken/) whose metadata differs from pydicom's, each for a reason
# README "DICOMweb server" gives: pydicom reads a length that runs over later elements, refuses
# an IS of "1A" or a private DS of "1.9.10.0", leaves a VR "OB or OW", keeps ISO 2022
# escapes inside a person name.
KNOWN_DIFFERENCES = {
    "fo-dicom/GH179A.dcm",
    "pydicom/badVR.dcm",
    "fo-dicom/GH195.dcm",
    "fo-dicom/RI6XDosiGap.dcm",
    "fo-dicom/charset/chrGB2312.dcm",
}


@pytest.mark.corpus
def test_metadata_equals_pydicom_on_the_corpus(corpus_dir: Path, tmp_path: Path) -> None:
    import warnings

    module = _compare_metadata()
    url = f"sqlite:///{tmp_path}/corpus.db"
    index_paths([corpus_dir], url, workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = module.compare_index(url, str(corpus_dir))
    assert result.compared >= 140 and result.cut_read >= 1
    sound = {f for f in result.differing_files if not f.startswith("broken")}
    assert sound <= KNOWN_DIFFERENCES, sound - KNOWN_DIFFERENCES
    assert result.equal / result.total > 0.99


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    url = f"sqlite:///{tmp_path}/index.db"
    index_paths([REPO / "tests" / "data" / "pydicom" / "rtplan.dcm"], url, workers=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        command = [sys.executable, "-c", "from indexer.cli import main; main()", "serve"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        busy = subprocess.run(
            [*command, "--db", url, "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert busy.returncode == 1 and busy.stderr.startswith(
        f"error: cannot listen on 127.0.0.1:{port}"
    )
    assert busy.stderr.count("\n") == 1 and busy.stdout == ""


def test_accepted_connections_send_without_delay() -> None:
    """The server's socket is named TCP, so the connections asyncio accepts on it (as uvicorn
    does: loop.create_server(sock=...)) get TCP_NODELAY: without it a kept-alive client
    waited some 40 ms per response (its delayed ACK against Nagle's algorithm)."""
    import asyncio
    import socket

    from indexer.serve.app import bind

    async def accepted_option() -> int:
        sock = bind("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Accepting(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                accepted = transport.get_extra_info("socket")
                seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Accepting, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_option()) != 0
