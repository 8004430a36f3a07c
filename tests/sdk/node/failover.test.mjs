// Failover and broken streams as the official OpenAI Node SDK sees them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { ADMIN_KEY, serve, start } from "./helpers.mjs";

let healthy;
let failing;
let cutting;
let server;
let client;

before(async () => {
  healthy = await start(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream"]);
  failing = await start(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream", "--profile", "failing"]);
  cutting = await start(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream", "--profile", "cut"]);
  const provider = (name, mock) =>
    `[[providers]]\nname = "${name}"\ntype = "openai-compatible"\nbase_url = "${mock.url}/v1"\napi_key = "sk-upstream"\nmodels = []\n\n`;
  server = await serve(
    provider("healthy", healthy) +
      provider("failing", failing) +
      provider("cutter", cutting) +
      '[[models]]\nname = "m"\nstrategy = "round-robin"\n' +
      '[[models.deployments]]\nprovider = "failing"\nmodel = "gpt-4o-mini"\n' +
      '[[models.deployments]]\nprovider = "healthy"\nmodel = "gpt-4o-mini"\n\n' +
      '[[models]]\nname = "cut"\nprovider = "cutter"\nmodel = "gpt-4o-mini"\n',
  );
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: ADMIN_KEY, maxRetries: 0 });
});

after(async () => {
  for (const process of [server, healthy, failing, cutting]) if (process) await process.stop();
});

test("a failing deployment never reaches the SDK", async () => {
  for (let i = 0; i < 6; i++) {
    const completion = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Hello?" }] });
    assert.ok(completion.choices[0].message.content.length > 0);
  }
});

test("a stream cut mid-way raises in the SDK", async () => {
  const stream = await client.chat.completions.create({
    model: "cut",
    messages: [{ role: "user", content: "Tell me a long story." }],
    stream: true,
  });
  let chunks = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of stream) chunks += 1;
    })(),
    (error) => error instanceof OpenAI.APIError && /stream/i.test(error.message),
  );
  assert.ok(chunks > 0, "some chunks arrived before the cut");
});
