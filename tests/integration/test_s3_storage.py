"""The S3 blob store and model fetching against a real S3 API server on loopback (moto's).

The blob checks are the file store's (tests/unit/test_foundation.py, test_blob_race.py), run on
both backends; then a gateway and a Celery worker sharing no file system for blobs, and models
published to the bucket, fetched once, and refused when tampered with.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data
from sqlalchemy.orm import Session

from shared.auth import create_tenant
from shared.config import CommonSettings
from shared.db.models import Asset, ContentItem, ContentKind
from shared.db.session import session_scope
from shared.inference.manifest import Manifest, publish_model_dir, write_manifest
from shared.inference.registry import ModelRegistry
from shared.model_versions import ModelError
from shared.remote_models import RemoteModels, remote_models
from shared.storage import (
    BlobNotFound,
    BlobStorage,
    FileSystemStorage,
    PayloadTooLarge,
    StorageError,
    blob_relpath,
    delete_unreferenced_blobs,
    ensure_stored,
    open_storage,
)
from shared.storage.s3 import SPOOL_BYTES, S3Storage
from tests.conftest import BUNDLED_MODELS, REDIS_SERVER, Stack, WorkerProcess
from tests.helpers import auth, jpeg_bytes, tag_names, wait_job

pytestmark = pytest.mark.integration

# A Redis database of its own: the stacks' workers (db 14, 15) must not take this one's jobs.
S3_STACK_REDIS_DB = 7


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _s3_settings(endpoint: str, **extra: Any) -> CommonSettings:
    return CommonSettings(
        environment="test",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",  # type: ignore[arg-type]
        s3_addressing_style="path",
        **extra,
    )


@pytest.fixture
def s3_settings(s3_endpoint: str) -> CommonSettings:
    return _s3_settings(s3_endpoint)


@pytest.fixture
def bucket(s3_settings: CommonSettings) -> str:
    name = f"atelier-{uuid.uuid4().hex[:12]}"
    _raw_client(s3_settings).create_bucket(Bucket=name)
    return name


def _raw_client(settings: CommonSettings) -> Any:
    from shared.storage.s3 import S3Endpoint

    return S3Endpoint.from_settings(settings).client()


@pytest.fixture(params=["file", "s3"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, s3_settings: CommonSettings
) -> BlobStorage:
    if request.param == "file":
        return open_storage(f"file://{tmp_path / 'blobs'}")
    bucket = request.getfixturevalue("bucket")
    return open_storage(f"s3://{bucket}/blobs", s3_settings)


def _set_aside_left(storage: BlobStorage) -> list[str]:
    """What the store holds in its ``tmp/``: set-aside blobs and temp files."""
    if isinstance(storage, FileSystemStorage):
        return [p.name for p in (storage.root / "tmp").iterdir()]
    assert isinstance(storage, S3Storage)
    return [obj["Key"] for obj in storage.objects.list("tmp/")]


# The file store's behaviour, on both backends.


def test_content_addressed_atomic_and_idempotent(storage: BlobStorage) -> None:
    a = storage.put_stream([b"hello ", b"world"])
    b = storage.put_bytes(b"hello world")
    assert a == b and a.size == 11
    with storage.open(a.key) as f:
        assert f.read() == b"hello world"
    with pytest.raises(PayloadTooLarge):
        storage.put_stream([b"x" * 10, b"y" * 10], max_bytes=15)
    # A refused or failed write leaves no temp file and no blob behind.
    assert _set_aside_left(storage) == []
    assert not storage.exists("5f1a5eeb6e27d0bcf2b0b4de8f5ba1fd7d8de1e2f5ab3c4f0b8f5c7c5a1f8e2b")
    storage.delete(a.key)
    assert not storage.exists(a.key)
    storage.delete(a.key)  # deleting what is not there is no error
    with pytest.raises(BlobNotFound):
        storage.open(a.key)
    with pytest.raises(FileNotFoundError):  # what callers have always caught
        storage.open(a.key)
    for op in (storage.open, storage.exists, storage.delete):
        with pytest.raises(KeyError):
            op("../../etc/passwd")


def test_large_blob_streams_in_and_out(storage: BlobStorage) -> None:
    payload = np.random.default_rng(3).bytes(SPOOL_BYTES + 12345)  # spills to disk on S3
    blob = storage.put_file(io.BytesIO(payload), max_bytes=len(payload))
    with storage.open(blob.key) as f:
        first = f.read(1000)
        assert first == payload[:1000]
        assert first + f.read() == payload


def test_concurrent_writes_of_the_same_blob(storage: BlobStorage) -> None:
    payload = np.random.default_rng(1).bytes(1 << 20)
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(storage.put_bytes(payload).key))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys) == 8
    with storage.open(keys[0]) as f:
        assert f.read() == payload


@pytest.fixture
def photo() -> bytes:
    return b"\xff\xd8\xff" + uuid.uuid4().bytes * 1000


@pytest.fixture
def tenant(sqlite_url: str) -> Iterator[str]:
    with session_scope(sqlite_url) as s:
        yield create_tenant(s, name=f"s3-{uuid.uuid4().hex[:8]}").id


def _item(s: Session, tenant: str, storage: BlobStorage, photo: bytes) -> tuple[str, str]:
    blob = storage.put_bytes(photo)
    item = ContentItem(tenant_id=tenant, kind=ContentKind.image)
    item.assets.append(Asset.stored(blob, role="original", mime_type="image/jpeg", width=1,
                                    height=1))  # fmt: skip
    s.add(item)
    s.commit()
    return item.id, blob.key


def _delete(s: Session, storage: BlobStorage, item_id: str, key: str) -> None:
    item = s.get(ContentItem, item_id)
    assert item is not None
    s.delete(item)
    s.commit()
    delete_unreferenced_blobs(s, storage, {key})


def test_writer_committing_while_the_blob_is_aside_gets_it_back(
    sqlite_url: str,
    storage: BlobStorage,
    tenant: str,
    photo: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with session_scope(sqlite_url) as deleter, session_scope(sqlite_url) as writer:
        a, key = _item(deleter, tenant, storage, photo)
        blob = storage.put_bytes(photo)
        set_aside = storage.set_aside

        def writer_commits_meanwhile(k: str) -> str | None:
            token = set_aside(k)
            item = ContentItem(tenant_id=tenant, kind=ContentKind.image)
            item.assets.append(Asset.stored(blob, role="original", mime_type="image/jpeg",
                                            width=1, height=1))  # fmt: skip
            writer.add(item)
            writer.commit()
            return token

        monkeypatch.setattr(storage, "set_aside", writer_commits_meanwhile)
        _delete(deleter, storage, a, key)
        assert storage.exists(key)
        with storage.open(key) as f:
            assert f.read() == photo
        assert ensure_stored(storage, [(key, lambda: photo)]) == 0
        assert _set_aside_left(storage) == []


def test_writer_committing_after_the_delete_writes_the_blob_again(
    sqlite_url: str, storage: BlobStorage, tenant: str, photo: bytes
) -> None:
    with session_scope(sqlite_url) as deleter, session_scope(sqlite_url) as writer:
        a, key = _item(deleter, tenant, storage, photo)
        assert storage.put_bytes(photo).key == key  # found stored: not written
        _delete(deleter, storage, a, key)  # no reference committed yet: deleted
        assert not storage.exists(key)
        item = ContentItem(tenant_id=tenant, kind=ContentKind.image)
        item.assets.append(Asset(role="original", storage_key=key, sha256=key,
                                 mime_type="image/jpeg", byte_size=len(photo)))  # fmt: skip
        writer.add(item)
        writer.commit()
        assert ensure_stored(storage, [(key, lambda: photo)]) == 1
        with storage.open(key) as f:
            assert f.read() == photo
        with pytest.raises(ValueError, match="hash to"):
            ensure_stored(storage, [("0" * 64, lambda: photo)])


def test_shared_blob_stays_until_its_last_reference_goes(
    sqlite_url: str, storage: BlobStorage, tenant: str, photo: bytes
) -> None:
    with session_scope(sqlite_url) as s:
        a, key = _item(s, tenant, storage, photo)
        b, _ = _item(s, tenant, storage, photo)
        _delete(s, storage, a, key)
        assert storage.exists(key)  # b still points at it
        _delete(s, storage, b, key)
        assert not storage.exists(key)
        assert _set_aside_left(storage) == []


def test_blob_left_aside_by_a_crashed_deleter_is_put_back(
    storage: BlobStorage, photo: bytes
) -> None:
    key = storage.put_bytes(photo).key
    token = storage.set_aside(key)
    assert token is not None and not storage.exists(key)
    assert storage.set_aside(key) is None  # nothing left to take
    assert storage.recover_set_aside(older_than_s=3600) == 0  # a live deleter is still deciding
    # S3's LastModified has whole seconds: let the set-aside be older than "now" there.
    time.sleep(1.1)
    assert storage.recover_set_aside(older_than_s=0) == 1
    with storage.open(key) as f:
        assert f.read() == photo
    storage.put_back(key, token)  # the deleter, late: no error, still there
    assert storage.exists(key)
    storage.discard(token)
    assert storage.exists(key) and _set_aside_left(storage) == []


# What only S3 has: its layout, its errors.


def test_s3_layout_matches_a_file_store(
    tmp_path: Path, bucket: str, s3_settings: CommonSettings
) -> None:
    """A file store copied into the bucket as it is (``aws s3 sync``) is readable from it."""
    files = FileSystemStorage(tmp_path / "blobs")
    blob = files.put_bytes(b"moved to the bucket")
    client = _raw_client(s3_settings)
    client.upload_file(str(files.path(blob.key)), bucket, f"store/{blob_relpath(blob.key)}")
    s3 = open_storage(f"s3://{bucket}/store", s3_settings)
    assert s3.exists(blob.key)
    with s3.open(blob.key) as f:
        assert f.read() == b"moved to the bucket"
    assert s3.local_path(blob.key) is None


def test_s3_errors_are_the_interfaces_own(s3_settings: CommonSettings, bucket: str) -> None:
    missing = open_storage(f"s3://no-such-{bucket}/x", s3_settings)
    with pytest.raises(StorageError, match="no bucket"):
        missing.check()
    with pytest.raises(StorageError):
        missing.put_bytes(b"nowhere to go")
    open_storage(f"s3://{bucket}", s3_settings).check()
    s3 = open_storage(f"s3://{bucket}/blobs", s3_settings)
    with pytest.raises(ValueError, match="token"):
        s3.discard("blobs/ab/cd/not-a-token")


# Gateway and worker with blobs in the bucket only.


@dataclasses.dataclass
class S3Stack(Stack):
    s3_env: dict[str, str] = dataclasses.field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{**self.s3_env, **extra})


def test_gateway_and_worker_share_blobs_through_s3_only(
    sqlite_url: str,
    models_dir: Path,
    s3_settings: CommonSettings,
    bucket: str,
    tmp_path: Path,
) -> None:
    private_models = tmp_path / "models"
    private_models.mkdir()
    for name in BUNDLED_MODELS:
        if (models_dir / name).is_dir():
            (private_models / name).symlink_to((models_dir / name).resolve())
    storage_url = f"s3://{bucket}/blobs"
    no_blob_dir = tmp_path / "no-blobs-here"
    stack = S3Stack(
        name="s3",
        db_url=sqlite_url,
        redis_url=f"{REDIS_SERVER}/{S3_STACK_REDIS_DB}",
        storage_dir=no_blob_dir,
        models_dir=private_models,
        s3_env={
            "ATELIER_STORAGE_URL": storage_url,
            "ATELIER_S3_ENDPOINT_URL": str(s3_settings.s3_endpoint_url),
            "ATELIER_S3_REGION": "us-east-1",
            "ATELIER_S3_ACCESS_KEY_ID": "testing",
            "ATELIER_S3_SECRET_ACCESS_KEY": "testing",
            "ATELIER_S3_ADDRESSING_STYLE": "path",
        },
    )
    redis.Redis.from_url(stack.redis_url).flushdb()
    worker = WorkerProcess(stack, "tagging", tmp_path / "worker.log")
    try:
        settings = stack.gateway_settings(
            storage_url=storage_url,
            s3_endpoint_url=s3_settings.s3_endpoint_url,
            s3_region="us-east-1",
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
            s3_addressing_style="path",
        )
        with TestClient(create_app(settings)) as client:
            assert client.get("/readyz").json()["checks"]["storage"] == "ok"
            _, key = stack.new_key()
            r = client.post(
                "/v1/content",
                headers=auth(key),
                files={"file": ("chelsea.jpg", jpeg_bytes(data.chelsea()), "image/jpeg")},
            )
            assert r.status_code == 202, r.text
            job = wait_job(client, key, r.json()["job_id"])
            assert job["status"] == "succeeded", (job, worker.log_path.read_text()[-3000:])
            item = client.get(f"/v1/content/{r.json()['id']}", headers=auth(key)).json()
            assert "cat" in tag_names(item)[:10]
            roles = {a["role"]: a for a in item["assets"]}
            assert set(roles) == {"original", "thumbnail"}
            thumb = client.get(roles["thumbnail"]["url"], headers=auth(key))
            assert thumb.status_code == 200, thumb.text
            assert thumb.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(thumb.content)).size == (256, 170)

            # The worker wrote the thumbnail to the bucket and deleted the working copy there.
            storage = client.app.state.storage  # type: ignore[attr-defined]
            assert isinstance(storage, S3Storage)
            stored = {obj["Key"].rsplit("/", 1)[-1] for obj in storage.objects.list("")}
            assert stored == {roles["original"]["sha256"], roles["thumbnail"]["sha256"]}
            assert not no_blob_dir.exists()
    finally:
        worker.stop()


def create_app(settings: Any) -> Any:
    from services.gateway.main import create_app as make

    return make(settings)


# Models published to the bucket.


class _Loaded:
    """Stands in for an InferenceModel: what the registry built it from."""

    def __init__(self, model_dir: Path, **_: Any):
        self.model_dir = model_dir


def _tiny_model(models_dir: Path, name: str, version: str, weights: bytes) -> None:
    with publish_model_dir(models_dir, name, version) as tmp:
        (tmp / "model.onnx").write_bytes(weights)
        (tmp / "labels.txt").write_text("cat\ndog\n")
        write_manifest(tmp, Manifest(name=name, version=version, kind="image_tagger"))


@pytest.fixture
def remote(s3_endpoint: str, bucket: str) -> RemoteModels:
    found = remote_models(_s3_settings(s3_endpoint, models_url=f"s3://{bucket}/models"))
    assert found is not None
    return found


def test_models_are_fetched_once_and_follow_the_active_pointer(
    remote: RemoteModels, tmp_path: Path
) -> None:
    built, local = tmp_path / "built", tmp_path / "local"
    _tiny_model(built, "tagger_x", "0001", b"weights one")
    _tiny_model(built, "tagger_x", "0002", b"weights two")
    remote.push(built, "tagger_x", "0001", activate=True)
    remote.push(built, "tagger_x", "0002")
    assert remote.versions("tagger_x") == ["0001", "0002"]

    registry = ModelRegistry(local, check_interval=0.0, remote=remote)
    first = registry.get("tagger_x", _Loaded)  # type: ignore[type-var]
    assert first.model_dir == local / "tagger_x" / "0001"
    assert (first.model_dir / "model.onnx").read_bytes() == b"weights one"
    assert sorted(p.name for p in (local / "tagger_x").iterdir()) == ["0001"]  # no temp dirs

    remote.set_active("tagger_x", "0002")
    second = registry.get("tagger_x", _Loaded)  # type: ignore[type-var]
    assert (second.model_dir / "model.onnx").read_bytes() == b"weights two"
    # Fetched once: a later fetch reads the local copy, even with the bucket's copy gone.
    remote.objects.delete("tagger_x/0002/model.onnx")
    assert remote.fetch(local, "tagger_x", "0002") == local / "tagger_x" / "0002"
    with pytest.raises(ModelError, match="no version 0003"):
        remote.fetch(local, "tagger_x", "0003")


def test_tampered_model_download_is_refused(remote: RemoteModels, tmp_path: Path) -> None:
    built, local = tmp_path / "built", tmp_path / "local"
    _tiny_model(built, "tagger_y", "0001", b"the real weights")
    remote.push(built, "tagger_y", "0001", activate=True)
    remote.objects.put_bytes("tagger_y/0001/model.onnx", b"the evil weights")

    registry = ModelRegistry(local, check_interval=0.0, remote=remote)
    with pytest.raises(ModelError, match=r"refused .*model.onnx is corrupt"):
        registry.get("tagger_y", _Loaded)  # type: ignore[type-var]
    assert registry.get_or_none("tagger_y", _Loaded) is None  # type: ignore[type-var]
    # Nothing half-fetched is left to be served.
    assert list((local / "tagger_y").iterdir()) == []
    # Names from the bucket never lead out of the models directory.
    remote.objects.put_bytes("tagger_y/ACTIVE", b"../../outside")
    assert remote.active_version("tagger_y") == "0001"
    with pytest.raises(ModelError, match="bad version"):
        remote.fetch(local, "tagger_y", "../../outside")
