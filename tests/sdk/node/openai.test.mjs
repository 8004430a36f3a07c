// The official OpenAI Node SDK, unmodified, against atalaya's built-in simulator.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { ADMIN_KEY, serve } from "./helpers.mjs";

let server;
let baseURL;

before(async () => {
  server = await serve("[sim]\ntokens_per_second = 100\n");
  baseURL = `${server.url}/v1`;
});

after(async () => {
  if (server) await server.stop();
});

test("non-streaming chat completion", async () => {
  const client = new OpenAI({ baseURL, apiKey: ADMIN_KEY, maxRetries: 0 });
  const completion = await client.chat.completions.create({
    model: "sim-chat",
    messages: [{ role: "user", content: "Hello from Node" }],
  });
  assert.equal(completion.object, "chat.completion");
  assert.ok(completion.choices[0].message.content.length > 10);
  assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
});

test("streaming chat completion", async () => {
  const client = new OpenAI({ baseURL, apiKey: ADMIN_KEY, maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: "sim-chat",
    messages: [{ role: "user", content: "Stream from Node" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let chunks = 0;
  let usage = null;
  for await (const chunk of stream) {
    chunks += 1;
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(chunks > 5, `only ${chunks} chunks`);
  assert.ok(text.length > 10);
  assert.ok(usage && usage.completion_tokens > 0);
});

test("a wrong key is an AuthenticationError", async () => {
  const client = new OpenAI({ baseURL, apiKey: "sk-atl-wrong", maxRetries: 0 });
  await assert.rejects(
    client.chat.completions.create({ model: "sim-chat", messages: [{ role: "user", content: "x" }] }),
    (error) => error instanceof OpenAI.AuthenticationError && error.code === "invalid_api_key",
  );
});
