"""guard vs direct vs nginx proxy_pass: throughput, added latency, CPU, streaming TTFB;
and the upstream HTTP client layer (aiohttp vs httpx-aiohttp vs httpx)."""
