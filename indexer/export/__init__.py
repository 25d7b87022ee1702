"""Writing the index out for other tools: `indexer export parquet` (parquet.py)."""
