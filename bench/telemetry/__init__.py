"""What tracing and metrics cost: the latency guard adds at concurrency 16 with its
telemetry on vs off, the audit trail into PostgreSQL in both."""
