"""The only package that talks to model servers (and the only one importing aiohttp)."""

from guard.upstream.client import Upstream, UpstreamPool
from guard.upstream.forward import UpstreamReply, forward

__all__ = ["Upstream", "UpstreamPool", "UpstreamReply", "forward"]
