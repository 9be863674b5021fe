"""The blob store full or failing during uploads (issue 16): a real tmpfs of 1 MiB, filled up
and remounted read-only under a running gateway; an S3 store (moto's server) whose bucket goes.

Full: 507 ``insufficient_storage``; failing otherwise: 503 ``storage_unavailable``; never a 500.
Either way nothing is half-written: no row that points at a missing blob, no blob or temp file
that no row points at. Text uploads, which store no blob, go on meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data
from sqlalchemy import select

from services.gateway.main import create_app
from shared.db.models import Asset, ContentItem, Job
from shared.db.session import session_scope
from tests.conftest import Stack
from tests.helpers import auth, jpeg_bytes
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

FILLER = "filler"


def _mount(root: Path, options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def small_store(pg_url: str, models_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    root = tmp_path / "blobs"
    root.mkdir()
    mounted = _mount(root, "size=1m")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a small blob store: {mounted.stderr.strip()}")
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis")
    try:
        yield Stack("storage", pg_url, redis_server.url, root, models_dir)
    finally:
        redis_server.stop()
        subprocess.run(["umount", "-l", str(root)], check=False)


def _leave_free(root: Path, free: int) -> None:
    """Fill the store up to ``free`` bytes (tmpfs counts whole pages)."""
    (root / FILLER).unlink(missing_ok=True)
    room = shutil.disk_usage(root).free
    assert room > free, (room, free)
    with (root / FILLER).open("wb") as f:
        f.write(b"\0" * (room - free))
    assert shutil.disk_usage(root).free == free


def _files(root: Path) -> set[str]:
    """Every file in the store but the filler: blobs, and temp files that must not stay."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {FILLER}


def unique_photo(name: str = "astronaut") -> bytes:
    """A photo with noise of its own: blobs are shared by content, and the rows of other tests
    in the same database must not point at the bytes this test expects to see discarded."""
    arr = np.asarray(getattr(data, name)()).astype(np.int16)
    noise = np.random.default_rng().integers(-8, 9, arr.shape)
    return jpeg_bytes(Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8)).convert("RGB"))


def _image(client: TestClient, key: str, original: bytes) -> Any:
    return client.post(
        "/v1/content", headers=auth(key), files={"file": ("a.jpg", original, "image/jpeg")}
    )


def _pages(root: Path, n: int) -> int:
    """``n`` bytes as the store counts them: whole blocks (pages, on a tmpfs)."""
    block = os.statvfs(root).f_frsize
    return -(-n // block) * block


def test_full_or_failing_store_answers_507_or_503_and_leaves_nothing_half_written(
    small_store: Stack,
) -> None:
    stack, root = small_store, small_store.storage_dir
    tenant_id, key = stack.new_key()
    original = unique_photo()
    with TestClient(create_app(stack.gateway_settings())) as client:
        # Room for the original but not for its renditions: the store fails halfway through.
        _leave_free(root, _pages(root, len(original) + 1))
        r = _image(client, key, original)
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "insufficient_storage"
        assert _files(root) == set(), "the original stored before the failure stayed"

        # No room even for the original: the write fails in the middle of the file.
        _leave_free(root, _pages(root, len(original) // 2))
        r = _image(client, key, original)
        assert (r.status_code, r.json()["error"]["code"]) == (507, "insufficient_storage")
        batch = client.post(
            "/v1/content:batch",
            headers=auth(key),
            files=[("file", ("a.jpg", original, "image/jpeg")),
                   ("file", ("b.jpg", unique_photo("coffee"), "image/jpeg"))],
        )  # fmt: skip
        assert (batch.status_code, batch.json()["error"]["code"]) == (507, "insufficient_storage")
        assert _files(root) == set()
        # Text stores no blob: it is accepted while the store is full.
        words = client.post("/v1/content", headers=auth(key), json={"text": "no blob needed"})
        assert words.status_code == 202, words.text

        # A store that fails otherwise (read-only): 503, and /readyz names it.
        (root / FILLER).unlink()
        remount = _mount(root, "remount,ro")
        assert remount.returncode == 0, remount.stderr
        try:
            r = _image(client, key, original)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "storage_unavailable"
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith(
                "error"
            )
        finally:
            assert _mount(root, "remount,rw").returncode == 0

        # Room again: the same upload is stored whole.
        ok = _image(client, key, original)
        assert ok.status_code == 202, ok.text

    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        items = dict(
            s.execute(
                select(ContentItem.id, ContentItem.kind).where(ContentItem.tenant_id == tenant_id)
            ).all()
        )
        assert items == {words.json()["id"]: "text", ok.json()["id"]: "image"}
        jobs = set(s.scalars(select(Job.content_id).where(Job.tenant_id == tenant_id)))
        assert jobs == set(items)
        keys = set(s.scalars(select(Asset.storage_key).where(Asset.content_id.in_(items))))
    assert len(keys) >= 3  # original, working copy, thumbnail
    # Every row's blob is there, and nothing else is: no orphan, no temp file.
    assert _files(root) == {f"{k[:2]}/{k[2:4]}/{k}" for k in keys}


def test_s3_store_failing_answers_503_and_stores_no_row(
    pg_url: str, models_dir: Path, tmp_path: Path
) -> None:
    """The bucket gone under a running gateway (S3 answers NoSuchBucket): 503, nothing stored."""
    from moto.server import ThreadedMotoServer

    from shared.storage.s3 import S3Endpoint

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis")
    try:
        host, port = server.get_host_and_port()
        s3 = {
            "s3_endpoint_url": f"http://{host}:{port}",
            "s3_region": "us-east-1",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
            "s3_addressing_style": "path",
        }
        stack = Stack("s3-faults", pg_url, redis_server.url, tmp_path / "unused", models_dir)
        settings = stack.gateway_settings(storage_url="s3://faults/blobs", **s3)
        raw = S3Endpoint.from_settings(settings).client()
        raw.create_bucket(Bucket="faults")
        tenant_id, key = stack.new_key()
        original = unique_photo()
        with TestClient(create_app(settings)) as client:
            raw.delete_bucket(Bucket="faults")
            r = _image(client, key, original)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "storage_unavailable"
            raw.create_bucket(Bucket="faults")
            ok = _image(client, key, original)
            assert ok.status_code == 202, ok.text
        listed = raw.list_objects_v2(Bucket="faults").get("Contents", [])
        stored = {o["Key"].rsplit("/", 1)[-1] for o in listed}
    finally:
        redis_server.stop()
        server.stop()
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        items = set(s.scalars(select(ContentItem.id).where(ContentItem.tenant_id == tenant_id)))
        keys = set(s.scalars(select(Asset.storage_key).where(Asset.content_id.in_(items))))
    assert items == {ok.json()["id"]}
    assert keys == stored and len(keys) >= 3
