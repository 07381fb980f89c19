"""The load: wrk against every arm at every concurrency once per round, and what the Redis
server did meanwhile (its CPU time and the limit scripts it ran, from INFO)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from unittest import mock

import redis

from bench.auth.arms import ORDER, Target, post
from bench.proxy_overhead import load
from bench.proxy_overhead.load import Sample


class RedisServer:
    """The Redis server the redis arm counts in, seen through INFO."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)

    def _info(self, section: str) -> dict[str, Any]:
        info: dict[str, Any] = self._client.info(section)
        return info

    def version(self) -> str:
        """Also the check that it answers: fails loudly before anything starts."""
        try:
            return str(self._info("server")["redis_version"])
        except (redis.RedisError, OSError) as exc:
            raise SystemExit(f"bench: no Redis at {self.url} ({type(exc).__name__})") from None

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads)."""
        cpu = self._info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def scripts_run(self) -> int:
        """Lua scripts the server ran (guard's admit check is one EVALSHA per request)."""
        stats = self._info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    def close(self) -> None:
        self._client.close()


def run_rounds(
    targets: Sequence[Target],
    concurrencies: Sequence[int],
    *,
    rounds: int,
    duration_s: float,
    warmup_s: float,
    server: RedisServer,
    log: Callable[[str], None],
) -> list[list[str]]:
    """Every arm at every concurrency once per round, in ``ORDER``, backwards every other
    round; returns each round's order."""
    by = {t.name: t for t in targets}
    total, done = rounds * len(concurrencies) * len(targets), 0
    orders: list[list[str]] = []
    for rnd in range(rounds):
        order = list(ORDER if rnd % 2 == 0 else reversed(ORDER))
        orders.append(order)
        for c in concurrencies:
            for name in order:
                sample = run_cell(by[name], c, duration_s, warmup_s, server)
                done += 1
                log(
                    f"[{done}/{total}] round {rnd + 1} c={c:<3} {name:<11}{sample.rps:>8.0f} req/s"
                    f"  p50 {sample.p50_ms:7.3f} ms  p99 {sample.p99_ms:7.3f} ms  "
                    f"{sample.cpu_us_per_req:6.0f} us/req"
                )
    return orders


def _errors(summary: dict[str, float]) -> int:
    kinds = ("err_connect", "err_read", "err_write", "err_status", "err_timeout")
    return sum(int(summary[k]) for k in kinds)


def run_cell(
    target: Target, c: int, duration_s: float, warmup_s: float, server: RedisServer
) -> Sample:
    """A warm-up, then proxy_overhead's measured wrk run (guard's CPU over it), with the
    arm's wrk script, and Redis's CPU over the measured run."""
    if not target.proc.alive():
        raise RuntimeError(f"{target.name} died:\n{target.proc.log_tail()}")
    # proxy_overhead's runner reads its script from load.LUA (as bench.pii swaps it too).
    with mock.patch.object(load, "LUA", target.script):
        if warmup_s > 0:
            _, summary = load.run_wrk(target.port, c, warmup_s)
            _fail_on_errors(target, c, _errors(summary), "warm-up")
            target.answered += int(summary["requests"])
            target.slack += c
        before = server.cpu_seconds()
        sample = load.measure(target.port, c, duration_s, 0.0, target.proc.cpu_seconds)
        redis_s = server.cpu_seconds() - before
    _fail_on_errors(target, c, sample.errors, "measured run")
    target.answered += sample.requests
    target.slack += c
    target.samples.setdefault(c, []).append(sample)
    target.redis_us.setdefault(c, []).append(redis_s / sample.requests * 1e6)
    return sample


def _fail_on_errors(target: Target, c: int, errors: int, run: str) -> None:
    """A refused (429, 503) or failed request is answered faster than a served one: an arm
    with any would look cheaper than it is, so the bench stops."""
    if not errors:
        return
    status, body = post(target.port, f"Bearer {target.token}")
    raise RuntimeError(
        f"{target.name} at c={c}, {run}: wrk counted {errors} request(s) not answered with "
        f"2xx (non-2xx status or socket errors); one request now gets HTTP {status}: "
        f"{body[:300]!r}\n{target.proc.log_tail()}"
    )


@dataclass(frozen=True)
class Counted:
    """The limit scripts Redis ran during the run, against the redis arm's requests."""

    scripts: int
    answered: int
    slack: int

    @property
    def ok(self) -> bool:
        """Every answered request ran its check in Redis (a request guard served without
        counting would have made the arm look cheap)."""
        return self.scripts >= self.answered

    @property
    def others(self) -> bool:
        """More scripts than the redis arm can account for (requests in flight at wrk's
        stops ran one too, and one more is a retry after NOSCRIPT): another client used
        this Redis meanwhile, and its CPU figures hold that client's work too."""
        return self.scripts > self.answered + self.slack + 1
