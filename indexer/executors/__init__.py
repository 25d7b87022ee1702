"""Where chunks of files are read, walked and written when the run's main process is not the
only writer: `chunks.py` the chunk writer of a worker (PostgreSQL `--writers N`)."""
