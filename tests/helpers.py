from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image


def jpeg_bytes(arr: np.ndarray | Image.Image, quality: int = 90) -> bytes:
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_job(client: TestClient, key: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        if job.get("status") in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def tag_names(content: dict[str, Any]) -> list[str]:
    return [t["name"] for t in content["tags"]]
