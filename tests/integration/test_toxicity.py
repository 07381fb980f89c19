"""The toxicity detector: classifiers loaded from disk through the real loading code
(tiny random checkpoints built here, and the built-in profanity model), batching that
changes no result, long texts in windows, load and inference failures, and the bundled
policy through the real proxy, streams included."""

import asyncio
import gc
import json
import multiprocessing
import threading

import httpx
import pytest

from guard.app import create_app
from guard.detectors.base import Direction, ScanContext
from guard.detectors.batcher import BatcherBusy
from guard.detectors.registry import DetectorRegistry
from guard.detectors.toxicity.backends import TorchClassifier
from guard.errors import ConfigError
from guard.policy.engine import AllowAll
from guard.policy.testing import model_card
from tests.conftest import make_settings
from tests.fakes.classifiers import detoxify_checkpoint, hf_classifier
from tests.fakes.guard_server import GuardServer
from tests.fakes.policies import write_bundle
from tests.integration.test_audit_events import recorded

CTX = ScanContext(Direction.INPUT, "/v1/chat/completions", model_card(None, {}), False)
SENTENCES = [
    "you are a stupid idiot",
    "have a nice day",
    "i will hurt them",
    "thanks for the help , this is great !",
    "why is this so bad ? no no no",
    "what a lovely day today",
]


def build(options):
    return DetectorRegistry.builtin().build("toxicity", options)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifiers")
    return {
        "multi": hf_classifier(root / "multi", ("toxicity", "insult", "threat"), seed=1),
        "single": hf_classifier(root / "single", ("ok", "abusive"), multi_label=False, seed=2),
        "detoxify": detoxify_checkpoint(root / "detoxify", seed=3),
        # sure of one answer whatever the text: insult 0.65, toxicity 0.007
        "biased": hf_classifier(root / "biased", ("toxicity", "insult"), bias=(-5.0, 0.6)),
        # position table of 8 while windows of 64 tokens are asked for: fails at inference
        "short": hf_classifier(root / "short", ("toxicity",), max_positions=8),
    }


def scores(findings):
    return {(f.text_index, f.label): f.score for f in findings}


async def test_a_multi_label_model_reports_each_label_with_a_sigmoid_score(models):
    detector = build({"backend": "transformers", "model": str(models["multi"]), "min_score": 0})
    found = await detector.detect(SENTENCES, CTX)
    assert {f.label for f in found} == {"toxicity", "insult", "threat"}
    assert {f.text_index for f in found} == set(range(len(SENTENCES)))
    assert all(0 < f.score < 1 for f in found)
    info = detector.describe()
    assert info["backend"] == "transformers"
    assert info["device"] == "cpu"
    assert info["licence"] == "apache-2.0"
    assert info["labels"] == ["toxicity", "insult", "threat"]
    assert detector.version() == f"multi@{info['revision']} (apache-2.0; cpu, float32)"
    detector.close()


async def test_a_single_label_model_uses_softmax(models):
    detector = build({"backend": "transformers", "model": str(models["single"]), "min_score": 0})
    found = scores(await detector.detect(SENTENCES, CTX))
    for index in range(len(SENTENCES)):
        assert found[index, "ok"] + found[index, "abusive"] == pytest.approx(1, abs=2e-4)
    detector.close()


async def test_a_detoxify_checkpoint_loads_offline_with_detoxifys_label_names(models):
    detector = build({"backend": "detoxify", "model": str(models["detoxify"]), "min_score": 0})
    assert detector.labels == (
        "toxicity",
        "severe_toxicity",
        "obscene",
        "threat",
        "insult",
        "identity_attack",
    )
    found = await detector.detect(["you are a stupid idiot"], CTX)
    assert len(found) == 6
    assert detector.describe()["revision"] != "unknown"
    detector.close()


async def test_a_checkpoint_with_more_heads_than_classes_reports_the_named_ones(tmp_path):
    path = detoxify_checkpoint(tmp_path / "unbiased", ("toxicity", "insult"), outputs=5)
    detector = build({"backend": "detoxify", "model": str(path), "min_score": 0})
    found = await detector.detect(["you are a stupid idiot", "have a nice day"], CTX)
    assert sorted(scores(found)) == [(0, "insult"), (0, "toxicity"), (1, "insult"), (1, "toxicity")]
    detector.close()


async def test_the_built_in_classifier_scores_real_abuse_high_and_plain_text_low():
    detector = build({})
    found = scores(
        await detector.detect(["Shut the fuck up, you useless idiot.", "Have a nice day!"], CTX)
    )
    assert found[0, "profanity"] > 0.9
    assert found.get((1, "profanity"), 0) < 0.2
    assert detector.describe()["model"] == "alt-profanity-check"
    detector.close()


async def test_batched_results_equal_one_at_a_time_and_keep_their_order(models):
    path = str(models["multi"])
    batched = build({"backend": "transformers", "model": path, "min_score": 0})
    single = build(
        {"backend": "transformers", "model": path, "min_score": 0, "batch": {"max_size": 1}}
    )
    texts = [SENTENCES[i % len(SENTENCES)] + " ." * (i % 5) for i in range(48)]
    together = await asyncio.gather(*(batched.detect([t], CTX) for t in texts))
    alone = [await single.detect([t], CTX) for t in texts]
    for mine, reference in zip(together, alone, strict=True):
        a, b = scores(mine), scores(reference)
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], abs=2e-4) for k in a)
    stats = batched.describe()["batch"]
    assert stats["texts"] == 48
    assert stats["largest"] > 1  # concurrent requests did share passes
    assert single.describe()["batch"]["largest"] == 1
    batched.close()
    single.close()


async def test_long_texts_are_scored_as_the_maximum_over_their_windows(models):
    detector = build({"backend": "transformers", "model": str(models["multi"]), "min_score": 0})
    classifier = detector._classifier  # the detector's own, to score windows one by one
    assert isinstance(classifier, TorchClassifier)
    text = " ".join(SENTENCES * 8)  # about 300 tokens: windows of 64
    windows, owners = classifier.windows([text])
    assert len(windows) >= 4
    assert owners == [0] * len(windows)
    assert all(len(w) <= 64 for w in windows)
    each = [classifier.forward([w])[0] for w in windows]
    expected = [max(column) for column in zip(*each, strict=True)]
    assert classifier.score([text])[0] == pytest.approx(expected, abs=1e-5)
    assert classifier.score([text])[0] != pytest.approx(each[0], abs=1e-7)  # not the first alone
    detector.close()


async def test_a_model_that_fails_at_inference_fails_the_scan_and_recovers(models):
    detector = build({"backend": "transformers", "model": str(models["short"]), "max_tokens": 64})
    with pytest.raises(RuntimeError):  # torch: positions beyond the model's table
        await detector.detect([" ".join(SENTENCES * 4)], CTX)
    assert len(await detector.detect(["hi"], CTX)) <= 1  # short texts still fit
    detector.close()


async def test_a_full_queue_fails_the_scan_after_its_wait(models):
    detector = build(
        {
            "backend": "transformers",
            "model": str(models["multi"]),
            "batch": {"max_size": 1, "max_queue": 1, "queue_timeout_s": 0.001},
        }
    )
    outcomes = await asyncio.gather(
        *(detector.detect([" ".join(SENTENCES * 6)], CTX) for _ in range(20)),
        return_exceptions=True,
    )
    assert any(isinstance(o, BatcherBusy) for o in outcomes)
    assert any(isinstance(o, list) for o in outcomes)
    detector.close()


async def test_a_dropped_detector_stops_its_worker_and_frees_its_model(models):
    detector = build({"backend": "transformers", "model": str(models["multi"])})
    await detector.detect(["hello"], CTX)
    worker = detector._batcher._thread
    assert worker.is_alive()
    del detector
    gc.collect()
    worker.join(timeout=5)
    assert not worker.is_alive()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"backend": "transformers", "model": "/nowhere/tox"},
            r"model directory not found: /nowhere/tox \(on a machine with internet: "
            r"guard models pull",
            id="missing-dir",
        ),
        pytest.param(
            {"backend": "detoxify", "model": "/nowhere/detoxify"},
            "guard models pull detoxify-original --to /nowhere/detoxify",
            id="missing-detoxify",
        ),
        pytest.param({"backend": "transformers"}, "needs `model:`", id="no-model"),
        pytest.param({"backend": "profanity", "model": "/x"}, "ships its weights", id="profanity"),
        pytest.param({"device": "tpu"}, "device", id="bad-device"),
    ],
)
def test_bad_settings_stop_the_start_naming_the_problem(options, message):
    with pytest.raises(ConfigError, match=message):
        build(options)


def test_a_broken_model_directory_stops_the_start(tmp_path, models):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", "utf-8")
    with pytest.raises(ConfigError, match="could not load"):
        build({"backend": "transformers", "model": str(broken)})
    empty = tmp_path / "detoxify"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no Detoxify checkpoint \(\*\.ckpt\)"):
        build({"backend": "detoxify", "model": str(empty)})


# -- through the proxy ----------------------------------------------------------------


def chat(url, content, stream=False):
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "m1", "messages": [{"role": "user", "content": content}], "stream": stream},
        timeout=30,
    )


def test_the_bundled_policy_refuses_an_abusive_prompt_with_the_built_in_model(guard_at, upstream):
    server = guard_at(make_settings(upstream.base_url))
    refused = chat(server.url, "Shut the fuck up, you worthless piece of shit.")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("The request was refused because")
    assert upstream.requests == []  # nothing reached the model server
    fine = chat(server.url, "How do I kill a process that is stuck?")
    assert fine.status_code == 200
    details = httpx.get(f"{server.url}/readyz", timeout=5).json()["detector_details"]
    assert details["toxicity"]["model"] == "alt-profanity-check"
    assert details["toxicity"]["batch"]["texts"] >= 2


def test_stopping_guard_stops_the_classifiers_worker(upstream):
    before = set(threading.enumerate())
    with GuardServer(make_settings(upstream.base_url)) as server:
        assert chat(server.url, "How do I kill a process that is stuck?").status_code == 200
        workers = [
            t for t in set(threading.enumerate()) - before if t.name.startswith("guard-toxicity")
        ]
        assert len(workers) == 1
        assert workers[0].is_alive()
    workers[0].join(timeout=5)
    assert not workers[0].is_alive()


FLAG_OUTPUT = """
    name: abuse
    detectors: {toxicity: {}}
    rules:
      - id: abuse.flag-output
        when: {request.direction: output, toxicity.insult: {gte: 0.5}}
        action: flag
        on_error: allow
"""


def test_abusive_streamed_answers_flow_on_and_are_flagged(guard_at, upstream, models, tmp_path):
    # The bundled policy's own test cases gate its load, and a random model fails them:
    # its flag rule is written here instead.
    bundle = write_bundle(tmp_path / "policies", {"abuse.yaml": FLAG_OUTPUT})
    settings = make_settings(
        upstream.base_url,
        detectors={"toxicity": {"backend": "transformers", "model": str(models["biased"])}},
        policy={"dir": str(bundle)},
    )
    server = guard_at(settings)
    upstream.behaviour.reply_text = "Fine. Here is your answer, as you asked. Goodbye."
    upstream.behaviour.chunk_delay = 0.01
    response = chat(server.url, "hello there", stream=True)
    assert response.status_code == 200
    assert "content_filter" not in response.text
    text = "".join(
        choice.get("delta", {}).get("content") or ""
        for block in response.text.split("\n\n")
        if block.startswith("data: {")
        for choice in json.loads(block[6:])["choices"]
    )
    assert text == upstream.behaviour.reply_text
    (event,) = recorded(server, 1)
    assert event.decision == "flag"
    assert ("output", "abuse.flag-output") in {(h.direction, h.rule_id) for h in event.rules}
    assert event.detector_versions["toxicity"].startswith("biased@")


def test_a_block_rule_on_answers_ends_the_stream_with_content_filter(
    guard_at, upstream, models, tmp_path
):
    bundle = write_bundle(
        tmp_path / "policies",
        {
            "abuse.yaml": """
                name: abuse
                detectors: {toxicity: {}}
                rules:
                  - id: abuse.block-output
                    when: {request.direction: output, toxicity.insult: {gte: 0.5}}
                    action: block
            """
        },
    )
    settings = make_settings(
        upstream.base_url,
        detectors={"toxicity": {"backend": "transformers", "model": str(models["biased"])}},
        policy={"dir": str(bundle)},
    )
    server = guard_at(settings)
    upstream.behaviour.reply_text = "First sentence here. Second one follows. And a third."
    response = chat(server.url, "hello there", stream=True)
    assert response.status_code == 200
    finals = [
        json.loads(block[6:])
        for block in response.text.split("\n\n")
        if block.startswith("data: {")
    ]
    assert finals[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "Second one follows" not in response.text
    assert response.text.rstrip().endswith("data: [DONE]")


def test_an_app_with_an_engine_in_code_starts_again_with_working_classifiers(upstream, models):
    # An embedder's app (a policy engine in code) served, stopped and served again, as a
    # test suite that starts one app object in two tests does: the second start must not
    # inherit the classifier the first stop closed (AllowAll answers 503 to a failed scan).
    settings = make_settings(
        upstream.base_url,
        detectors={"toxicity": {"backend": "transformers", "model": str(models["multi"])}},
    )
    app = create_app(settings, policy=AllowAll())
    workers: list[threading.Thread] = []
    for _ in range(2):
        with GuardServer(app=app) as server:
            assert chat(server.url, "have a nice day").status_code == 200
            workers += [
                t
                for t in threading.enumerate()
                if t.name.startswith("guard-toxicity") and t not in workers
            ]
    assert len(workers) == 2  # one classifier per start, each stopped with it
    for worker in workers:
        worker.join(timeout=5)
    assert not any(worker.is_alive() for worker in workers)


def test_a_start_failing_after_the_policies_opened_closes_what_it_opened(
    upstream, models, tmp_path, monkeypatch
):
    # The audit writer (a process and a sender thread) and the classifier's worker thread
    # are open by the time the later steps of a start run; one of those failing must not
    # leave them running in a process that embeds guard, or in a test suite.
    bundle = write_bundle(tmp_path / "policies", {"abuse.yaml": FLAG_OUTPUT})
    settings = make_settings(
        upstream.base_url,
        detectors={"toxicity": {"backend": "transformers", "model": str(models["multi"])}},
        policy={"dir": str(bundle)},
    )

    def refused(*args, **kwargs):
        raise RuntimeError("the key store is unreachable")

    monkeypatch.setattr("guard.app._authenticator", refused)
    threads_before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="did not start"):
        GuardServer(settings).__enter__()
    left = [t for t in threading.enumerate() if t not in threads_before]
    for thread in left:
        thread.join(timeout=5)
    assert not [t.name for t in left if t.is_alive() and t.name.startswith("guard-")]
    children = [p for p in multiprocessing.active_children() if p not in children_before]
    assert not [p.name for p in children if p.is_alive()]
