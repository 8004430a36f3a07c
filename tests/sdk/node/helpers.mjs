// Starts the real `atalaya` binary (serve or mock-provider) for the SDK tests.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ADMIN_KEY = "node-sdk-admin-key-0123456789";
const BINARY = process.env.ATALAYA_BIN ?? new URL("../../../target/debug/atalaya", import.meta.url).pathname;

// Runs `atalaya ARGS...` and resolves with its URL once it logs where it listens.
export async function start(args, cwd) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ATALAYA_") && !k.startsWith("OPENAI_")));
  env.ATALAYA_ADMIN_KEY = ADMIN_KEY;
  const child = spawn(BINARY, args, { cwd, env, stdio: ["ignore", "ignore", "pipe"] });
  const url = await new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => reject(new Error(`atalaya did not start:\n${output}`)), 60000);
    child.stderr.on("data", (data) => {
      output += data;
      const match = output.match(/Listening on (http:\/\/[0-9.:]+?)\.(\s|$)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}

// `atalaya serve` on an ephemeral port with `config` as its atalaya.toml.
export async function serve(config) {
  const dir = mkdtempSync(join(tmpdir(), "atalaya-node-"));
  writeFileSync(join(dir, "atalaya.toml"), config);
  const server = await start(
    ["serve", "--listen", "127.0.0.1:0", "--config", join(dir, "atalaya.toml"), "--data-dir", join(dir, "data")],
    dir,
  );
  return {
    url: server.url,
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
