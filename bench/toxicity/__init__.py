"""What the toxicity detector's micro-batcher buys: texts/s and latency per request of
guard's ``toxicity`` detector under concurrent requests, with batching on and off."""
