"""guard's light request-path metrics expose exactly what prometheus_client's own
counters and histograms would, for the same observations."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from guard.telemetry.metrics import _Families

BOUNDS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.5, 3.0, 0.1]


def test_light_families_match_prometheus_client():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    light = _Families()
    histogram = light.histogram("t_seconds", "doc", ("a",), BOUNDS)
    counter = light.counter("t_events", "doc", ("a", "b"))
    ours.register(light)
    ref_h = Histogram("t_seconds", "doc", ["a"], buckets=BOUNDS, registry=theirs)
    ref_c = Counter("t_events", "doc", ["a", "b"], registry=theirs)
    for i, value in enumerate(VALUES):
        key = "x" if i % 2 else "y"
        histogram.add((key,), value)
        ref_h.labels(key).observe(value)
        counter.add((key, "z"))
        ref_c.labels(key, "z").inc()

    def samples(registry):
        lines = generate_latest(registry).decode().splitlines()
        return sorted(line for line in lines if not line.startswith("#") and "_created" not in line)

    assert samples(ours) == samples(theirs)
