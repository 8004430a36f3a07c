"""Failover and broken streams as the official SDKs see them."""

import anthropic
import openai
import pytest

from conftest import ADMIN_KEY, Process, start_server


def deployments_config(mocks):
    text = ""
    for index, mock in enumerate(mocks):
        text += f"""
[[providers]]
name = "p{index}"
type = "openai-compatible"
base_url = "{mock.url}/v1"
api_key = "sk-upstream"
models = []
"""
    text += '\n[[models]]\nname = "m"\nstrategy = "round-robin"\n'
    for index, _ in enumerate(mocks):
        text += f'[[models.deployments]]\nprovider = "p{index}"\nmodel = "gpt-4o-mini"\n'
    return text


@pytest.fixture(scope="module")
def cut_and_failing():
    """Model `m` over a healthy simulator and a failing one; model `cut` on one that drops
    every stream after a few chunks."""
    healthy = Process(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream", "--tokens-per-second", "400"])
    failing = Process(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream", "--profile", "failing"])
    cutting = Process(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream", "--profile", "cut"])
    config = deployments_config([healthy, failing])
    config += f"""
[[providers]]
name = "cutter"
type = "openai-compatible"
base_url = "{cutting.url}/v1"
api_key = "sk-upstream"
models = []

[[providers]]
name = "cutter-anthropic"
type = "anthropic"
base_url = "{cutting.url}"
api_key = "sk-upstream"
models = []

[[models]]
name = "cut"
provider = "cutter"
model = "gpt-4o-mini"

[[models]]
name = "cut-claude"
provider = "cutter-anthropic"
model = "claude-haiku-4-5-20251001"
"""
    server = start_server(config)
    yield server
    for process in (server, healthy, failing, cutting):
        process.stop()


def test_a_failing_deployment_never_reaches_the_sdk(cut_and_failing):
    client = openai.OpenAI(base_url=cut_and_failing.url + "/v1", api_key=ADMIN_KEY, max_retries=0)
    for _ in range(10):
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hello?"}])
        assert answer.choices[0].message.content
    for _ in range(4):
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hello?"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_a_stream_cut_mid_way_raises_in_the_openai_sdk(cut_and_failing):
    client = openai.OpenAI(base_url=cut_and_failing.url + "/v1", api_key=ADMIN_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="cut", messages=[{"role": "user", "content": "Tell me a long story."}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk)
    assert received, "some chunks arrived before the cut"
    assert "stream" in str(raised.value).lower()


def test_a_stream_cut_mid_way_raises_in_the_anthropic_sdk(cut_and_failing):
    client = anthropic.Anthropic(base_url=cut_and_failing.url, api_key=ADMIN_KEY, max_retries=0)
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(
            model="cut-claude", max_tokens=200, messages=[{"role": "user", "content": "Tell me a long story."}]
        ) as stream:
            for _ in stream.text_stream:
                pass
