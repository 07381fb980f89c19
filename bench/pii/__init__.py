"""What the pii detector costs: its latency in process, what it adds to guard's latency
and throughput, and to the time to first token of streamed answers."""
