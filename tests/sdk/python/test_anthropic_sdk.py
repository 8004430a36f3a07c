"""The official Anthropic Python SDK, unmodified, against atalaya's /v1/messages — backed once
by an Anthropic upstream and once by an OpenAI upstream — and the OpenAI SDK calling models
backed by Anthropic and by Gemini."""

import json

import anthropic
import openai
import pytest

CLAUDE = "claude-haiku-4-5-20251001"  # served by the `anthropic` provider
GPT = "gpt-4o-mini"  # served by the `openai` provider
GEMINI = "gemini-2.0-flash"  # served by the `gemini` provider

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


def claude_client(server, key):
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def openai_client(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_messages_plain(multi_server, admin_key, model):
    message = claude_client(multi_server, admin_key).messages.create(
        model=model, max_tokens=300, system="Be brief.", messages=[{"role": "user", "content": "Tell me about watchtowers."}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and len(message.content[0].text) > 10
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_messages_streaming(multi_server, admin_key, model):
    client = claude_client(multi_server, admin_key)
    plain = client.messages.create(model=model, max_tokens=300, messages=[{"role": "user", "content": "Stream please."}])
    pieces = []
    with client.messages.stream(model=model, max_tokens=300, messages=[{"role": "user", "content": "Stream please."}]) as stream:
        for text in stream.text_stream:
            pieces.append(text)
        final = stream.get_final_message()
    assert len(pieces) >= 5, "the answer arrives in several pieces"
    assert "".join(pieces) == plain.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_messages_tool_use_round_trip(multi_server, admin_key, model):
    client = claude_client(multi_server, admin_key)
    question = [{"role": "user", "content": "What is the weather in Lima?"}]
    message = client.messages.create(model=model, max_tokens=300, tools=[WEATHER_TOOL], messages=question)
    assert message.stop_reason == "tool_use"
    tool_use = next(block for block in message.content if block.type == "tool_use")
    assert tool_use.name == "get_weather"
    assert tool_use.input["unit"] == "celsius" and isinstance(tool_use.input["city"], str)

    with client.messages.stream(model=model, max_tokens=300, tools=[WEATHER_TOOL], messages=question) as stream:
        streamed = stream.get_final_message()
    streamed_use = next(block for block in streamed.content if block.type == "tool_use")
    assert streamed_use.name == "get_weather" and streamed_use.input == tool_use.input

    answer = client.messages.create(
        model=model,
        max_tokens=300,
        tools=[WEATHER_TOOL],
        messages=question
        + [
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "19C, sunny"}]},
        ],
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"


def test_anthropic_errors_are_raised_as_anthropic_errors(multi_server, admin_key):
    with pytest.raises(anthropic.AuthenticationError):
        claude_client(multi_server, "sk-atl-not-a-key").messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError):
        claude_client(multi_server, admin_key).messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )


OPENAI_TOOL = {"type": "function", "function": {"name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"], "parameters": WEATHER_TOOL["input_schema"]}}


@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
def test_openai_sdk_with_tools_on_translated_models(multi_server, admin_key, model):
    client = openai_client(multi_server, admin_key)
    question = [{"role": "user", "content": "What is the weather in Lima?"}]
    completion = client.chat.completions.create(model=model, messages=question, tools=[OPENAI_TOOL], max_tokens=300)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert arguments["unit"] == "celsius"

    stream = client.chat.completions.create(
        model=model, messages=question, tools=[OPENAI_TOOL], max_tokens=300, stream=True, stream_options={"include_usage": True}
    )
    name, streamed_arguments, usage, finish = "", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for streamed_choice in chunk.choices:
            finish = streamed_choice.finish_reason or finish
            for delta in streamed_choice.delta.tool_calls or []:
                name += delta.function.name or ""
                streamed_arguments += delta.function.arguments or ""
    assert name == "get_weather" and json.loads(streamed_arguments) == arguments
    assert finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens == completion.usage.prompt_tokens

    followup = client.chat.completions.create(
        model=model,
        tools=[OPENAI_TOOL],
        max_tokens=300,
        messages=question + [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "19C, sunny"}],
    )
    assert followup.choices[0].finish_reason == "stop"
    assert followup.choices[0].message.content


@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
def test_openai_sdk_streams_translated_text(multi_server, admin_key, model):
    client = openai_client(multi_server, admin_key)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe a lighthouse."}]
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=300)
    pieces = [
        chunk.choices[0].delta.content
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=300, stream=True)
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(pieces) >= 2
    assert "".join(pieces) == plain.choices[0].message.content
