"""The audit trail: events (events.py), the recorder (recorder.py, spool.py), hash
chains (chain.py) and the compliance queries (queries.py)."""
