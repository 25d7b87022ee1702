"""`indexer serve`: a read-only DICOMweb server (PS3.18: QIDO-RS, WADO-RS) over the index.

app.py builds the ASGI application and runs it with uvicorn; qido.py, metadata.py and
retrieve.py answer the requests, with the query logic of indexer.reports (qido, wado,
dicom_json). Needs the extra ``dicom-indexer[serve]`` (Starlette, uvicorn).
"""

INSTALL_SERVE = "pip install 'dicom-indexer[serve]'"
