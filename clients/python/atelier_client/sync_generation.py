"""The synchronous client's generation areas: generate, generators."""

from __future__ import annotations

from typing import Any

from atelier_client import calls
from atelier_client._http import Call, route
from atelier_client.sync_jobs import _Area
from atelier_client.types import Generation, Job


class GenerateAPI(_Area):
    @route("POST", "/v1/generate/text")
    def text(self, prompt: str = "", *, wait: float | None = None, **options: Any) -> Generation:
        """Options: max_length, temperature, top_k, top_p, seed, n, stop, model_version, tag.
        ``status`` is ``succeeded`` with ``result`` when ready within ``wait`` seconds; else
        wait on ``job_id``."""
        return self._send(calls.generate("/v1/generate/text", {"prompt": prompt, **options}, wait))

    @route("POST", "/v1/generate/images")
    def images(self, *, n: int = 8, wait: float | None = None, **options: Any) -> Generation:
        """Options: seed, truncation, model_version, tag; images are stored as content."""
        return self._send(calls.generate("/v1/generate/images", {"n": n, **options}, wait))

    @route("POST", "/v1/generate/images:interpolate")
    def interpolate(
        self, seed_a: int, seed_b: int, *, wait: float | None = None, **options: Any
    ) -> Generation:
        body = {"seed_a": seed_a, "seed_b": seed_b, **options}
        return self._send(calls.generate("/v1/generate/images:interpolate", body, wait))


class GeneratorsAPI(_Area):
    @route("POST", "/v1/generators/text:train")
    def train_text(self, **options: Any) -> Job:
        """Options: filter ``{"tag", "kind"}``, corpus, epochs, budget_s, hidden, layers, ..."""
        body = self._send(Call("POST", "/v1/generators/text:train", json=options))
        return self._client.jobs.get(body["job_id"])

    @route("POST", "/v1/generators/images:train")
    def train_images(self, **options: Any) -> Job:
        """Options: filter ``{"tag"}``, steps, budget_s, conditional."""
        body = self._send(Call("POST", "/v1/generators/images:train", json=options))
        return self._client.jobs.get(body["job_id"])
