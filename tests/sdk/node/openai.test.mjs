// The official OpenAI Node SDK, unmodified, against atalaya's built-in simulator.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";

const ADMIN_KEY = "node-sdk-admin-key-0123456789";
const BINARY = process.env.ATALAYA_BIN ?? new URL("../../../target/debug/atalaya", import.meta.url).pathname;
let server;
let baseURL;
let dir;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "atalaya-node-"));
  writeFileSync(join(dir, "atalaya.toml"), "[sim]\ntokens_per_second = 100\n");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ATALAYA_") && !k.startsWith("OPENAI_")));
  env.ATALAYA_ADMIN_KEY = ADMIN_KEY;
  server = spawn(BINARY, ["serve", "--listen", "127.0.0.1:0", "--config", join(dir, "atalaya.toml"), "--data-dir", join(dir, "data")], {
    cwd: dir,
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  baseURL = await new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 60000);
    server.stderr.on("data", (data) => {
      output += data;
      const match = output.match(/Listening on (http:\/\/[0-9.:]+?)\.(\s|$)/);
      if (match) {
        clearTimeout(timer);
        resolve(`${match[1]}/v1`);
      }
    });
  });
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGTERM");
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
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
