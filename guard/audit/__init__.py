"""The audit trail: events (events.py), the writer process that guard feeds
(writer.py), the recorder it runs (recorder.py, spool.py), hash chains (chain.py) and
the compliance queries (queries.py)."""
