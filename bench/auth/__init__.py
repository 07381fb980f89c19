"""What API keys and limits add to guard's latency: the same guard with no keys, with a
key from the settings and limits counted in memory, with limits counted in Redis, and
with a key from the database."""
