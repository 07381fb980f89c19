"""Where the texts are in each API shape, and that writing them back changes nothing else."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.errors import BadRequest
from guard.protocols import ADAPTERS, write_texts

CHAT = ADAPTERS["/v1/chat/completions"]
COMPLETIONS = ADAPTERS["/v1/completions"]
EMBEDDINGS = ADAPTERS["/v1/embeddings"]
OLLAMA_CHAT = ADAPTERS["/api/chat"]
OLLAMA_GENERATE = ADAPTERS["/api/generate"]
OLLAMA_EMBED = ADAPTERS["/api/embed"]


@pytest.mark.parametrize(
    ("adapter", "body", "expected"),
    [
        pytest.param(CHAT, {"messages": [{"role": "user", "content": "a"}]}, ["a"], id="chat-str"),
        pytest.param(
            CHAT,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "image_url", "image_url": {"url": "data:..."}},
                            {"type": "text", "text": "b"},
                        ],
                    }
                ]
            },
            ["a", "b"],
            id="chat-parts",
        ),
        pytest.param(
            CHAT,
            {
                "messages": [
                    {"role": "system", "content": "sys"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "1",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"q": "x"}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "1", "content": "tool result"},
                ]
            },
            ["sys", '{"q": "x"}', "tool result"],
            id="chat-tools",
        ),
        pytest.param(COMPLETIONS, {"prompt": "p", "suffix": "s"}, ["p", "s"], id="completion"),
        pytest.param(COMPLETIONS, {"prompt": ["p1", "p2"]}, ["p1", "p2"], id="completion-list"),
        pytest.param(EMBEDDINGS, {"input": "e"}, ["e"], id="embed-str"),
        pytest.param(EMBEDDINGS, {"input": ["e1", "e2"]}, ["e1", "e2"], id="embed-list"),
        pytest.param(
            OLLAMA_CHAT,
            {
                "messages": [
                    {"role": "user", "content": "u"},
                    {
                        "role": "assistant",
                        "content": "",
                        "thinking": "t",
                        "tool_calls": [
                            {
                                "function": {
                                    "name": "f",
                                    "arguments": {"city": "Oslo", "n": 3, "tags": ["a"]},
                                }
                            }
                        ],
                    },
                    {"role": "tool", "content": "result"},
                ]
            },
            ["u", "t", "f", "Oslo", "a", "result"],
            id="ollama-chat",
        ),
        pytest.param(OLLAMA_GENERATE, {"prompt": "p", "system": "s"}, ["s", "p"], id="ollama-gen"),
        pytest.param(OLLAMA_EMBED, {"input": ["a", "b"]}, ["a", "b"], id="ollama-embed"),
    ],
)
def test_request_texts(adapter, body, expected):
    assert [ref.text for ref in adapter.request_texts(body)] == expected


@pytest.mark.parametrize(
    ("adapter", "body", "param"),
    [
        pytest.param(CHAT, {"messages": "hi"}, "messages", id="messages-not-array"),
        pytest.param(CHAT, {}, "messages", id="messages-missing"),
        pytest.param(
            CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages", id="content-number"
        ),
        pytest.param(CHAT, {"messages": ["hi"]}, None, id="message-not-object"),
        pytest.param(
            CHAT,
            {"messages": [{"content": [{"type": "text", "text": 1}]}]},
            None,
            id="text-part-number",
        ),
        pytest.param(COMPLETIONS, {"prompt": [1, 2, 3]}, "prompt", id="token-ids"),
        pytest.param(COMPLETIONS, {"prompt": [[1, 2], [3]]}, "prompt", id="token-id-batches"),
        pytest.param(COMPLETIONS, {"prompt": 3}, "prompt", id="prompt-number"),
        pytest.param(EMBEDDINGS, {"input": [101, 102]}, "input", id="embed-token-ids"),
        pytest.param(
            OLLAMA_GENERATE, {"prompt": "p", "context": [1, 2]}, None, id="ollama-context"
        ),
        pytest.param(OLLAMA_CHAT, {"messages": [{"content": ["x"]}]}, None, id="ollama-content"),
    ],
)
def test_uninspectable_or_malformed_requests_are_refused(adapter, body, param):
    with pytest.raises(BadRequest) as err:
        adapter.request_texts(body)
    if param:
        assert err.value.param == param


@pytest.mark.parametrize(
    ("adapter", "body"), [(CHAT, {"stream": "yes"}), (OLLAMA_CHAT, {"stream": 1})]
)
def test_stream_flag_must_be_boolean(adapter, body):
    with pytest.raises(BadRequest):
        adapter.is_stream(body)


def test_ollama_streams_by_default_and_openai_does_not():
    assert OLLAMA_CHAT.is_stream({}) is True
    assert OLLAMA_GENERATE.is_stream({}) is True
    assert CHAT.is_stream({}) is False


def test_response_and_chunk_texts_cover_content_reasoning_and_tool_calls():
    response = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "answer",
                    "reasoning_content": "thought",
                    "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}],
                },
            },
            {"index": 1, "message": {"content": "second"}},
        ]
    }
    assert [r.text for r in CHAT.response_texts(response)] == ["answer", "thought", "{}", "second"]
    chunk = {
        "choices": [
            {
                "index": 1,
                "delta": {
                    "content": "de",
                    "tool_calls": [{"index": 2, "function": {"arguments": '{"a"'}}],
                },
            }
        ]
    }
    refs = CHAT.chunk_texts(chunk)
    assert [(r.text, r.stream_key) for r in refs] == [
        ("de", (1, "content")),
        ('{"a"', (1, "tool", 2)),
    ]
    assert [r.text for r in COMPLETIONS.chunk_texts({"choices": [{"text": "t"}]})] == ["t"]
    assert [
        r.text for r in OLLAMA_CHAT.chunk_texts({"message": {"content": "c", "thinking": "th"}})
    ] == ["c", "th"]
    assert [r.text for r in OLLAMA_GENERATE.chunk_texts({"response": "r"})] == ["r"]


def test_write_texts_changes_only_the_texts():
    body = {
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "x-unknown": [1, 2],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "secret here"}]},
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "f", "arguments": '{"k": "secret"}'}}],
            },
        ],
    }
    original = copy.deepcopy(body)
    refs = CHAT.request_texts(body)
    write_texts(body, refs, ["<X> here", '{"k": "<X>"}'])
    assert body["messages"][0]["content"][0]["text"] == "<X> here"
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"k": "<X>"}'
    for key in ("model", "tools", "response_format", "logprobs", "x-unknown"):
        assert body[key] == original[key]


def test_filtered_final_chunks():
    last = {"id": "c1", "created": 5, "model": "m", "object": "chat.completion.chunk"}
    final = CHAT.filtered_final_chunk(last, [0, 1])
    assert final["id"] == "c1"
    assert [c["finish_reason"] for c in final["choices"]] == ["content_filter"] * 2
    assert final["choices"][0]["delta"] == {}
    ollama = OLLAMA_CHAT.filtered_final_chunk({"model": "m"}, [0])
    assert ollama["done"] is True
    assert ollama["done_reason"] == "content_filter"


def test_string_leaves_keeps_document_order_at_any_depth():
    from guard.protocols.base import string_leaves

    value = {"a": "1", "b": [{"c": "2"}, "3", 4, None], "d": {"e": {"f": "5"}}}
    assert list(string_leaves(value, ("x",))) == [
        (("x", "a"), "1"),
        (("x", "b", 0, "c"), "2"),
        (("x", "b", 1), "3"),
        (("x", "d", "e", "f"), "5"),
    ]
    deep: object = "leaf"
    for _ in range(5000):
        deep = {"k": deep}
    assert [text for _, text in string_leaves(deep, ())] == ["leaf"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "model",
                    "messages",
                    "content",
                    "role",
                    "tool_calls",
                    "function",
                    "arguments",
                    "type",
                    "text",
                    "prompt",
                    "input",
                    "suffix",
                    "system",
                    "choices",
                    "message",
                    "delta",
                    "index",
                    "response",
                    "thinking",
                    "context",
                    "stream",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(
        st.sampled_from(
            [
                "model",
                "messages",
                "prompt",
                "input",
                "suffix",
                "system",
                "context",
                "stream",
                "choices",
            ]
        ),
        _json,
        max_size=5,
    )
)
def test_any_json_body_is_read_or_refused_with_400(body):
    for adapter in ADAPTERS.values():
        try:
            refs = adapter.request_texts(body)
            adapter.is_stream(body)
        except BadRequest:
            continue
        write_texts(body, refs, [ref.text.upper() for ref in refs])
        assert [r.text for r in adapter.request_texts(body)] == [r.text.upper() for r in refs]


@settings(max_examples=300, deadline=None)
@given(body=_json)
def test_any_upstream_json_is_read_without_error(body):
    for adapter in ADAPTERS.values():
        for refs in (adapter.response_texts(body), adapter.chunk_texts(body)):
            assert all(isinstance(ref.text, str) for ref in refs)
