"""Webhooks: a real local HTTP receiver gets a signed notification from a real worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.gateway.main import create_app
from shared.webhooks import verify_signature
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, wait_job

pytestmark = pytest.mark.integration


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.requests) >= n, f"got {len(self.requests)} deliveries"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def client(stack: Stack, worker: WorkerProcess) -> Iterator[TestClient]:
    # The receiver listens on loopback: allowed for these tests only (the workers get the
    # same setting from Stack.env).
    with TestClient(create_app(stack.gateway_settings(webhook_allow_private_targets=True))) as c:
        yield c


def test_job_finish_is_delivered_signed(
    client: TestClient, stack: Stack, receiver: Receiver
) -> None:
    _, admin = stack.new_key(scopes=("read", "write", "admin"))
    created = client.post(
        "/v1/webhooks",
        headers=auth(admin),
        json={"url": receiver.url, "job_types": ["tag_content"]},
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert "secret" not in client.get("/v1/webhooks", headers=auth(admin)).json()[0]

    r = client.post("/v1/content", headers=auth(admin), json={"title": "notify me"})
    job = wait_job(client, admin, r.json()["job_id"])
    receiver.wait(1)
    headers, body = receiver.requests[0]
    timestamp = headers["x-atelier-timestamp"]
    assert abs(int(timestamp) - time.time()) < 120
    # The documented scheme, computed by hand: HMAC-SHA256 of "<timestamp>.<raw body>".
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers["x-atelier-signature"], "sha256=" + mac.hexdigest())
    assert verify_signature(
        secret, body, timestamp=timestamp, signature_header=headers["x-atelier-signature"]
    )
    # A replay later than the window, or another body, does not verify.
    assert not verify_signature(
        secret,
        body,
        timestamp=timestamp,
        signature_header=headers["x-atelier-signature"],
        now=int(timestamp) + 301,
    )
    assert not verify_signature(
        secret, body + b" ", timestamp=timestamp, signature_header=headers["x-atelier-signature"]
    )
    payload = json.loads(body)
    assert payload["event"] == "job.finished"
    assert payload["job"]["id"] == job["id"] and payload["job"]["status"] == "succeeded"


def test_webhook_validation_and_scopes(client: TestClient, stack: Stack) -> None:
    _, writer = stack.new_key()
    r = client.post("/v1/webhooks", headers=auth(writer), json={"url": "http://x.test/h"})
    assert r.status_code == 403
    _, admin = stack.new_key(scopes=("admin",))
    bad_url = client.post("/v1/webhooks", headers=auth(admin), json={"url": "ftp://x/h"})
    assert bad_url.status_code == 422 and bad_url.json()["error"]["code"] == "validation_error"
    bad_type = client.post(
        "/v1/webhooks", headers=auth(admin), json={"url": "http://x.test/h", "job_types": ["x"]}
    )
    assert bad_type.status_code == 422
    _, other_admin = stack.new_key(scopes=("admin",))
    hook = client.post("/v1/webhooks", headers=auth(admin), json={"url": "http://x.test/h"})
    hid = hook.json()["id"]
    assert client.delete(f"/v1/webhooks/{hid}", headers=auth(other_admin)).status_code == 404
    assert client.delete(f"/v1/webhooks/{hid}", headers=auth(admin)).status_code == 204
