"""Starts the real `atalaya` binary (serve, mock-provider) for the SDK tests."""

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

ADMIN_KEY = "sdk-test-admin-key-0123456789"
BINARY = os.environ.get("ATALAYA_BIN", os.path.join(os.path.dirname(__file__), "../../../target/debug/atalaya"))
LISTENING = re.compile(r"Listening on http://([0-9.:]+?)\.(\s|$)")


class Process:
    def __init__(self, args, env=None, cwd=None, cleanup=None):
        self.cleanup = cleanup
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("ATALAYA_", "OPENAI_"))}
        clean.update(env or {})
        self.output = []
        self.proc = subprocess.Popen(
            [BINARY, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=clean, cwd=cwd, text=True,
        )
        found = threading.Event()
        self.address = None

        def pump():
            for line in self.proc.stderr:
                self.output.append(line)
                match = LISTENING.search(line)
                if match and not found.is_set():
                    self.address = match.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(60):
            self.proc.kill()
            raise RuntimeError("atalaya did not start:\n" + "".join(self.output))

    @property
    def url(self):
        return f"http://{self.address}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.cleanup:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def start_server(config="", env=None):
    data = tempfile.mkdtemp(prefix="atalaya-sdk-")
    path = os.path.join(data, "atalaya.toml")
    with open(path, "w") as handle:
        handle.write(config)
    return Process(
        ["serve", "--listen", "127.0.0.1:0", "--config", path, "--data-dir", os.path.join(data, "data")],
        env={"ATALAYA_ADMIN_KEY": ADMIN_KEY, **(env or {})},
        cwd=data,
        cleanup=data,
    )


@pytest.fixture(scope="session")
def sim_server():
    # A paced simulator, so streamed chunks really arrive one after another.
    server = start_server("[sim]\ntokens_per_second = 40\n")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mock_upstream():
    mock = Process(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream"])
    yield mock
    mock.stop()


@pytest.fixture(scope="session")
def proxied_server(mock_upstream):
    server = start_server(env={"OPENAI_API_KEY": "sk-upstream", "OPENAI_BASE_URL": mock_upstream.url + "/v1"})
    yield server
    server.stop()


@pytest.fixture
def admin_key():
    return ADMIN_KEY


@pytest.fixture
def wait():
    def poll(check, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError("condition not met in time")

    return poll


@pytest.fixture(scope="session")
def multi_upstream():
    # One simulator speaking every format, paced so streams really arrive in pieces.
    mock = Process(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream", "--tokens-per-second", "200"])
    yield mock
    mock.stop()


@pytest.fixture(scope="session")
def multi_server(multi_upstream):
    """Anthropic, OpenAI and Gemini providers, all backed by the simulator."""
    url = multi_upstream.url
    config = f"""
[[providers]]
type = "anthropic"
base_url = "{url}"
api_key = "sk-upstream"

[[providers]]
type = "openai"
base_url = "{url}/v1"
api_key = "sk-upstream"

[[providers]]
type = "gemini"
base_url = "{url}"
api_key = "sk-upstream"
"""
    server = start_server(config)
    yield server
    server.stop()
