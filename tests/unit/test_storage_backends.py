"""Choosing a blob backend by URL, and what choosing one costs a role that never uses S3.

The backends' behaviour is checked against a real S3 API in
tests/integration/test_s3_storage.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.config import CommonSettings
from shared.storage import FileSystemStorage, open_storage
from shared.storage.s3 import S3Endpoint, S3Storage, parse_s3_url

ROOT = Path(__file__).resolve().parents[2]


def test_boto3_is_imported_only_when_s3_is_used(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from shared.config import CommonSettings
        from shared.remote_models import remote_models
        from shared.storage import open_storage
        import services.gateway.main, workers.context

        open_storage("file://{tmp_path}").put_bytes(b"x")
        assert remote_models(CommonSettings()) is None
        open_storage("s3://bucket/prefix")  # the client is made on first use
        assert "boto3" not in sys.modules and "botocore" not in sys.modules, "boto3 imported"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_open_storage_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_storage(f"file://{tmp_path}"), FileSystemStorage)
    s3 = open_storage("s3://media/blobs/", CommonSettings(s3_endpoint_url="http://minio:9000"))
    assert isinstance(s3, S3Storage)
    assert (s3.objects.bucket, s3.objects.prefix) == ("media", "blobs")
    assert s3.objects.endpoint.endpoint_url == "http://minio:9000"
    assert parse_s3_url("s3://media") == ("media", "")
    with pytest.raises(ValueError, match="s3://bucket"):
        parse_s3_url("s3:///no-bucket")
    with pytest.raises(ValueError, match="unsupported"):
        open_storage("gs://media/blobs")


def test_s3_credentials_come_from_settings_or_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_S3_ACCESS_KEY_ID", "AKIA-test")
    monkeypatch.setenv("ATELIER_S3_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("ATELIER_S3_ADDRESSING_STYLE", "path")
    settings = CommonSettings()
    assert "s3cret" not in repr(settings)
    endpoint = S3Endpoint.from_settings(settings)
    assert (endpoint.access_key_id, endpoint.secret_access_key) == ("AKIA-test", "s3cret")
    assert endpoint.addressing_style == "path"
    # Unset: left to boto3's own chain (AWS_* variables, a profile, an instance role).
    assert S3Endpoint.from_settings(None) == S3Endpoint()
    monkeypatch.delenv("ATELIER_S3_SECRET_ACCESS_KEY")
    with pytest.raises(ValueError, match="together"):
        CommonSettings()


def test_set_aside_tokens_name_only_the_stores_tmp() -> None:
    s3 = open_storage("s3://media/blobs")
    for token in ("ab/cd/" + "a" * 64, "tmp/../ab/cd/x.aside", "tmp/x.txt"):
        with pytest.raises(ValueError, match="token"):
            s3.discard(token)
