"""guard vs direct vs nginx proxy_pass: throughput, added latency, CPU, streaming TTFB."""
