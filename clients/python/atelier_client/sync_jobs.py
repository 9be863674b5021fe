"""The synchronous client's areas: the base every area builds on, jobs and webhooks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from atelier_client._http import Call, drop_none, route, seg
from atelier_client.errors import JobFailed, WaitTimeout
from atelier_client.types import Job, Webhook, WebhookCreated, job_fields

if TYPE_CHECKING:
    from atelier_client.sync import Atelier


POLL_START_S, POLL_MAX_S = 0.25, 5.0


class _Area:
    def __init__(self, client: Atelier):
        self._client = client
        self._t = client._transport

    def _send(self, call: Call) -> Any:
        return self._t.send(call)


class JobsAPI(_Area):
    def _job(self, body: dict[str, Any]) -> Job:
        return Job(**job_fields(body), _api=self)

    @route("GET", "/v1/jobs")
    def recent(
        self, *, limit: int = 50, status: str | None = None, type: str | None = None
    ) -> list[Job]:
        """Your newest jobs first, optionally of one status (queued, running, ...) or type."""
        params = drop_none(limit=limit, status=status, type=type)
        body = self._send(Call("GET", "/v1/jobs", params=params))
        return [self._job(j) for j in body["items"]]

    @route("GET", "/v1/jobs/{job_id}")
    def get(self, job_id: str) -> Job:
        return self._job(self._send(Call("GET", f"/v1/jobs/{seg(job_id)}")))

    @route("POST", "/v1/jobs/{job_id}:cancel")
    def cancel(self, job_id: str) -> Job:
        return self._job(self._send(Call("POST", f"/v1/jobs/{seg(job_id)}:cancel")))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        raise_on_failure: bool = False,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job is final, every 0.25 s at first, backing off to every 5 s."""
        deadline = time.monotonic() + timeout
        interval = POLL_START_S
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.done:
                if raise_on_failure and not job.succeeded:
                    raise JobFailed(job)
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job, timeout)
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, POLL_MAX_S)


class WebhooksAPI(_Area):
    @route("POST", "/v1/webhooks")
    def create(self, url: str, *, job_types: Sequence[str] = ()) -> WebhookCreated:
        """Needs an admin key; the answer's ``secret`` is shown this once."""
        body = {"url": url, "job_types": list(job_types)}
        return self._send(Call("POST", "/v1/webhooks", json=body))

    @route("GET", "/v1/webhooks")
    def list(self) -> list[Webhook]:
        return self._send(Call("GET", "/v1/webhooks"))

    @route("DELETE", "/v1/webhooks/{webhook_id}")
    def delete(self, webhook_id: str) -> None:
        self._send(Call("DELETE", f"/v1/webhooks/{seg(webhook_id)}", expect="none"))
