"""The audit trail's cost: events per second the recorder writes into PostgreSQL, and
the latency guard adds with audit on vs off under load."""
