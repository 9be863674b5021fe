"""Fast unit tests of the foundation pieces (no services needed)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from shared.config import CommonSettings, GatewaySettings
from shared.imaging import encode_webp, hamming, open_image, perceptual_hash, thumbnail
from shared.inference.manifest import Manifest, publish_model_dir, read_manifest, write_manifest
from shared.model_versions import (
    ModelError,
    UnknownTag,
    active_version,
    check_tag,
    set_active_version,
)
from shared.storage import FileSystemStorage, PayloadTooLarge, open_storage


def test_settings_read_env_and_accept_unprefixed_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db:5432/atelier")
    monkeypatch.setenv("ATELIER_MAX_UPLOAD_BYTES", "1234")
    s = GatewaySettings()
    assert s.max_upload_bytes == 1234
    assert s.sqlalchemy_url == "postgresql+psycopg://u@db:5432/atelier"


def test_production_refuses_sqlite() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        CommonSettings(environment="production", database_url="sqlite:///x.db")


def test_storage_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    storage = FileSystemStorage(tmp_path)
    a = storage.put_stream([b"hello ", b"world"])
    b = storage.put_bytes(b"hello world")
    assert a == b and a.size == 11
    with storage.open(a.key) as f:
        assert f.read() == b"hello world"
    with pytest.raises(PayloadTooLarge):
        storage.put_stream([b"x" * 10, b"y" * 10], max_bytes=15)
    # A refused or failed write leaves no temp file and no blob behind.
    assert list((tmp_path / "tmp").iterdir()) == []
    storage.delete(a.key)
    assert not storage.exists(a.key)
    with pytest.raises(KeyError):
        storage.path("../../etc/passwd")


def test_concurrent_writes_of_the_same_blob(tmp_path: Path) -> None:
    storage = FileSystemStorage(tmp_path)
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
    assert len(set(keys)) == 1
    assert storage.path(keys[0]).read_bytes() == payload


def test_open_storage_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_storage(f"file://{tmp_path}"), FileSystemStorage)
    with pytest.raises(ValueError, match="unsupported"):
        open_storage("ftp://example/blobs")


def test_phash_survives_reencoding_but_separates_photos() -> None:
    cat = Image.fromarray(data.chelsea())
    small = cat.resize((200, 133)).convert("L").convert("RGB")
    coffee = Image.fromarray(data.coffee())
    assert hamming(perceptual_hash(cat), perceptual_hash(small)) <= 6
    assert hamming(perceptual_hash(cat), perceptual_hash(coffee)) > 16


def test_open_image_handles_modes_and_thumbnails() -> None:
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    import io

    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    im = open_image(buf.getvalue())
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)
    thumb = thumbnail(Image.fromarray(data.astronaut()), 256)
    assert thumb.size == (256, 256) and encode_webp(thumb)[:4] == b"RIFF"


def test_model_publication_is_atomic_and_versioned(tmp_path: Path) -> None:
    with publish_model_dir(tmp_path, "demo", "1") as d:
        (d / "model.onnx").write_bytes(b"abc")
        write_manifest(d, Manifest(name="demo", version="1", kind="x"))
    with pytest.raises(RuntimeError), publish_model_dir(tmp_path, "demo", "2") as d:
        (d / "model.onnx").write_bytes(b"half")
        raise RuntimeError("builder crashed")
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["1"]
    assert read_manifest(tmp_path / "demo" / "1").files["model.onnx"]
    with publish_model_dir(tmp_path, "demo", "2") as d:
        (d / "model.onnx").write_bytes(b"v2")
        write_manifest(d, Manifest(name="demo", version="2", kind="x"))
    assert active_version(tmp_path, "demo") == "2"
    set_active_version(tmp_path, "demo", "1")
    assert active_version(tmp_path, "demo") == "1"


def test_check_tag_reads_the_tags_from_the_manifest(tmp_path: Path) -> None:
    for version, tags in (("1", ["cat", "dog"]), ("2", [])):
        with publish_model_dir(tmp_path, "gen", version) as d:
            pre = {"tags": tags} if tags else {}
            write_manifest(d, Manifest(name="gen", version=version, kind="x", preprocessing=pre))
    check_tag(tmp_path, "gen", "1", "dog")
    check_tag(tmp_path, "gen", "2", None)
    with pytest.raises(UnknownTag, match=r"unknown tag 'cow' for gen:1; its tags: cat, dog") as e:
        check_tag(tmp_path, "gen", "1", "cow")
    assert e.value.tags == ["cat", "dog"]
    with pytest.raises(UnknownTag, match="trained without tags"):
        check_tag(tmp_path, "gen", "2", "cat")
    with pytest.raises(ModelError, match="no readable manifest"):
        check_tag(tmp_path, "gen", "3", "cat")


def test_manifest_timestamps_are_utc() -> None:
    m = Manifest(name="n", version="v", kind="k")
    assert datetime.fromisoformat(m.created_at).tzinfo is not None
    assert datetime.fromisoformat(m.created_at) <= datetime.now(UTC)


def test_openapi_docs_and_error_shape_for_unknown_routes(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from services.gateway.main import create_app

    app = create_app(GatewaySettings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    with TestClient(app) as c:
        spec = c.get("/openapi.json").json()
        assert {"/v1/content", "/v1/content:batch", "/v1/jobs/{job_id}", "/readyz"} <= set(
            spec["paths"]
        )
        assert c.get("/docs").status_code == 200
        missing = c.get("/v1/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        wrong = c.put("/healthz")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"
