"""Every generation parameter, observed through the gateway."""

import json

import httpx
import pytest
from openai import OpenAI
from predictionguard import PredictionGuard
from tokenizers import Tokenizer

MODEL = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.integration


def complete(mesh, **body) -> dict:
    r = httpx.post(f"{mesh.base_url}/completions", json={"model": MODEL, **body}, headers=mesh.headers(), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def text(mesh, **body) -> str:
    return complete(mesh, **body)["choices"][0]["text"]


@pytest.fixture(scope="module")
def tokenizer(mesh) -> Tokenizer:
    return Tokenizer.from_file(str(mesh.model_dir / "tokenizer.json"))


def test_logit_bias_forces_a_token(mesh, tokenizer):
    [banana] = tokenizer.encode(" banana", add_special_tokens=False).ids
    out = text(mesh, prompt="The capital of France is", max_tokens=6, temperature=0, logit_bias={str(banana): 100})
    assert out == " banana" * 6
    # A strong negative bias removes the greedy choice.
    greedy = complete(mesh, prompt="The capital of France is", max_tokens=1, temperature=0)["choices"][0]["text"]
    [first] = tokenizer.encode(greedy, add_special_tokens=False).ids
    assert (
        text(mesh, prompt="The capital of France is", max_tokens=1, temperature=0, logit_bias={str(first): -100})
        != greedy
    )


def test_logit_bias_outside_the_vocabulary_is_400(mesh):
    r = httpx.post(
        f"{mesh.base_url}/completions",
        headers=mesh.headers(),
        timeout=30,
        json={"model": MODEL, "prompt": "x", "logit_bias": {"999999": 5}},
    )
    assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"]


def test_top_k_one_equals_greedy_whatever_the_temperature(mesh):
    prompt = "My favourite animal is"
    greedy = text(mesh, prompt=prompt, max_tokens=12, temperature=0)
    for seed in (1, 2):
        assert text(mesh, prompt=prompt, max_tokens=12, temperature=1.5, top_k=1, seed=seed) == greedy


def test_tiny_top_p_equals_greedy(mesh):
    prompt = "My favourite animal is"
    assert text(mesh, prompt=prompt, max_tokens=12, temperature=1.0, top_p=1e-6, seed=3) == text(
        mesh, prompt=prompt, max_tokens=12, temperature=0
    )


def test_stop_cuts_the_greedy_text_exactly_before_it(mesh):
    prompt = "One, two, three,"
    greedy = text(mesh, prompt=prompt, max_tokens=20, temperature=0)
    stop = greedy[8:12]
    assert stop and stop in greedy
    body = complete(mesh, prompt=prompt, max_tokens=20, temperature=0, stop=["zzzz", stop])
    assert body["choices"][0]["text"] == greedy[: greedy.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_stop_spanning_tokens_never_leaks_in_a_stream(mesh):
    prompt = "One, two, three,"
    greedy = text(mesh, prompt=prompt, max_tokens=20, temperature=0)
    stop = greedy[6:14]  # several tokens long
    with httpx.stream(
        "POST",
        f"{mesh.base_url}/completions",
        headers=mesh.headers(),
        timeout=60,
        json={"model": MODEL, "prompt": prompt, "max_tokens": 20, "temperature": 0, "stop": stop, "stream": True},
    ) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    assert streamed == greedy[: greedy.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_gives_length(mesh):
    body = complete(mesh, prompt="Once upon a time", max_tokens=3, temperature=0)
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3


def test_seed_reproduces_and_n_gives_distinct_choices(mesh):
    args = dict(prompt="Here is a random word:", max_tokens=8, temperature=1.0, seed=1234)
    a, b = complete(mesh, n=3, **args), complete(mesh, n=3, **args)
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in a["choices"]}) >= 2
    assert text(mesh, **{**args, "seed": 99}) != a["choices"][0]["text"]
    # The prompt counts once however many samples it has.
    single = complete(mesh, **args)
    assert a["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]


def test_echo_prepends_the_prompt(mesh):
    prompt = "The capital of France is"
    plain = text(mesh, prompt=prompt, max_tokens=5, temperature=0)
    assert text(mesh, prompt=prompt, max_tokens=5, temperature=0, echo=True) == prompt + plain


def test_frequency_and_presence_penalties_reduce_repetition(mesh):
    # Greedy SmolLM2 continues the list with a comma after every word; penalties on
    # already generated tokens make the comma (and each word) less likely to come back.
    def commas(**penalty) -> int:
        return text(mesh, prompt="One, two, three,", max_tokens=24, temperature=0, **penalty).count(",")

    base = commas()
    assert base >= 8
    assert commas(frequency_penalty=2.0) < base / 2
    assert commas(presence_penalty=2.0) < base / 2
    assert commas(frequency_penalty=0.0, presence_penalty=0.0) == base


def test_concurrent_requests_keep_their_own_parameters(mesh, tokenizer):
    import concurrent.futures

    [banana] = tokenizer.encode(" banana", add_special_tokens=False).ids
    greedy = text(mesh, prompt="The capital of France is", max_tokens=8, temperature=0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        biased = [
            pool.submit(
                text,
                mesh,
                prompt="The capital of France is",
                max_tokens=8,
                temperature=0,
                logit_bias={str(banana): 100},
            )
            for _ in range(2)
        ]
        plain = [
            pool.submit(text, mesh, prompt="The capital of France is", max_tokens=8, temperature=0) for _ in range(2)
        ]
        assert [f.result() for f in biased] == [" banana" * 8] * 2
        assert [f.result() for f in plain] == [greedy] * 2


def test_predictionguard_sdk_streams(mesh):
    client = PredictionGuard(api_key=mesh.api_key, url=mesh.base_url)
    chunks = list(
        client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, stream=True, temperature=0.1)
    )
    assert chunks and all("data" in c for c in chunks)
    assert "".join(c["data"]["choices"][0]["text"] for c in chunks).strip()


def test_openai_sdk_streams_without_usage(mesh):
    client = OpenAI(base_url=mesh.base_url, api_key=mesh.api_key)
    chunks = list(
        client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == text(
        mesh, prompt="Once upon a time", max_tokens=8, temperature=0
    )
