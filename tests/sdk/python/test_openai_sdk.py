"""The official OpenAI Python SDK, unmodified, against atalaya."""

import json
import time
import urllib.request

import openai
import pytest


def client(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_chat_completion(sim_server, admin_key):
    completion = client(sim_server, admin_key).chat.completions.create(
        model="sim-chat", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert len(completion.choices[0].message.content) > 10
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    again = client(sim_server, admin_key).chat.completions.create(
        model="sim-chat", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert again.choices[0].message.content == completion.choices[0].message.content


def test_streaming_arrives_incrementally_with_usage_last(sim_server, admin_key):
    stream = client(sim_server, admin_key).chat.completions.create(
        model="sim-chat",
        messages=[{"role": "user", "content": "Stream to me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, pieces, usage = [], [], None
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
    assert len(pieces) >= 12
    # 40 tokens/s and at least 12 tokens: a buffered answer would arrive all at once.
    assert arrivals[-1] - arrivals[0] >= 0.2
    assert usage is not None and usage.completion_tokens == len(pieces)


def test_streaming_without_usage_option_has_no_usage_chunk(sim_server, admin_key):
    stream = client(sim_server, admin_key).chat.completions.create(
        model="sim-chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    chunks = list(stream)
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_embeddings(sim_server, admin_key):
    # The SDK asks for base64 by default and decodes it; both encodings must work.
    result = client(sim_server, admin_key).embeddings.create(model="sim-embed", input=["alpha", "beta"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 256
    floats = client(sim_server, admin_key).embeddings.create(model="sim-embed", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, rel=1e-6)


def test_models_list_and_retrieve(sim_server, admin_key):
    ids = [model.id for model in client(sim_server, admin_key).models.list()]
    assert ids == ["sim-chat", "sim-embed"]
    assert client(sim_server, admin_key).models.retrieve("sim-chat").owned_by == "sim"


def test_bad_key_raises_authentication_error(sim_server):
    with pytest.raises(openai.AuthenticationError) as raised:
        client(sim_server, "sk-atl-definitely-wrong").chat.completions.create(
            model="sim-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.code == "invalid_api_key"
    assert raised.value.response.headers.get("x-request-id")


def test_unknown_model_raises_not_found(sim_server, admin_key):
    with pytest.raises(openai.NotFoundError) as raised:
        client(sim_server, admin_key).chat.completions.create(model="gpt-9000", messages=[{"role": "user", "content": "x"}])
    assert raised.value.code == "model_not_found"
    assert "gpt-9000" in raised.value.message


def test_bad_request_raises_with_the_field(sim_server, admin_key):
    with pytest.raises(openai.BadRequestError) as raised:
        client(sim_server, admin_key).chat.completions.create(
            model="sim-chat", messages=[{"role": "user", "content": "x"}], temperature="hot"
        )
    assert raised.value.param == "temperature"


def test_virtual_key_from_the_admin_api(sim_server, admin_key):
    request = urllib.request.Request(
        sim_server.url + "/api/v1/keys",
        data=json.dumps({"name": "sdk"}).encode(),
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
        method="POST",
    )
    created = json.load(urllib.request.urlopen(request))
    completion = client(sim_server, created["key"]).chat.completions.create(
        model="sim-chat", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content


def test_routing_through_an_openai_compatible_upstream(proxied_server, mock_upstream, admin_key):
    sdk = client(proxied_server, admin_key)
    completion = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "via upstream"}])
    assert completion.model == "gpt-4o-mini"
    assert completion.usage.completion_tokens > 0

    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "stream via upstream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 10
    assert chunks[-1].usage.completion_tokens > 0

    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="sim-chat", messages=[{"role": "user", "content": "x"}])
    embedding = sdk.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(embedding.data[0].embedding) == 1536
