"""W3C trace context: what guard continues, and what it refuses to."""

import pytest

from guard.pipeline.context import parse_traceparent

T, S = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(f"00-{T}-{S}-01", (T, S, True), id="sampled"),
        pytest.param(f" 00-{T}-{S}-00 ", (T, S, False), id="not-sampled-padded"),
        pytest.param(f"00-{T}-{S}-03", (T, S, True), id="other-flags"),
        pytest.param(f"ff-{T}-{S}-01", None, id="version-ff"),
        pytest.param(f"00-{'0' * 32}-{S}-01", None, id="zero-trace"),
        pytest.param(f"00-{T}-{'0' * 16}-01", None, id="zero-span"),
        pytest.param(f"00-{T.upper()}-{S}-01", None, id="upper-case"),
        pytest.param(f"00-{T}-{S}", None, id="no-flags"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_traceparent(header, expected):
    assert parse_traceparent(header) == expected
