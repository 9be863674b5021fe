"""The pure rules behind issue 16: text, JSON depth, internal signatures, webhook targets,
production secrets. The HTTP answers are in tests/integration/test_security.py."""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import json
import pkgutil

import pytest
from pydantic import BaseModel, ValidationError

import shared.schemas
from shared import internal_auth, webhooks
from shared.config import DEV_INTERNAL_SECRET, GatewaySettings, RecommenderSettings
from shared.request_limits import json_depth_error, loads_limited
from shared.schemas.content import ContentCreate
from shared.schemas.text import RequestModel, find_text_error, text_error


def _request_schemas() -> list[type[BaseModel]]:
    found = []
    for info in pkgutil.iter_modules(shared.schemas.__path__):
        module = importlib.import_module(f"shared.schemas.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            # Request bodies are the schemas that refuse unknown fields.
            if (
                issubclass(cls, BaseModel)
                and cls.__module__ == module.__name__
                and cls.model_config.get("extra") == "forbid"
            ):
                found.append(cls)
    return found


def test_every_request_schema_applies_the_text_rule() -> None:
    schemas = _request_schemas()
    assert len(schemas) >= 15
    assert [c.__name__ for c in schemas if not issubclass(c, RequestModel)] == []


def test_text_rule() -> None:
    assert text_error("plain") is None and text_error("é ✓ 𝄞") is None
    assert "NUL" in (text_error("a\x00") or "")
    assert "surrogate" in (text_error("a\udc80") or "")
    assert find_text_error({"a": [1, {"b": "\x00"}]}) == (["a", 1, "b"], text_error("\x00"))
    path, msg = find_text_error({"ok": {"k\x00": 1}}) or ([], "")
    assert path == ["ok", "k\x00"] and msg.startswith("key")
    with pytest.raises(ValidationError) as exc:
        ContentCreate.model_validate({"metadata": {"a": {"b": ["x", "y\x00"]}}})
    error = exc.value.errors()[0]
    assert error["loc"] == ("metadata",) and "metadata[a][b][1]" in error["msg"]


@pytest.mark.parametrize(
    ("doc", "depth"),
    [
        ("1", 0),
        ('{"a": "[[[[[["}', 1),
        ('{"a": "\\\\", "b": [[1]]}', 3),
        ('{"a": "\\"[[[[", "b": {}}', 2),
        ('[{"a": [{"b": [[]]}]}]', 6),
    ],
)
def test_json_depth(doc: str, depth: int) -> None:
    json.loads(doc)  # the cases are valid JSON
    assert json_depth_error(doc, max(depth, 1)) is None
    if depth > 1:
        assert json_depth_error(doc, depth - 1) is not None


def test_json_depth_of_a_bomb_and_loads_limited() -> None:
    bomb = "[" * 100_000 + "]" * 100_000
    assert json_depth_error(bomb, 32) == "the JSON nests deeper than 32 levels"
    with pytest.raises(ValueError, match="deeper"):
        loads_limited(bomb, 32)
    assert loads_limited('{"a": [1]}', 32) == {"a": [1]}


def test_internal_signature_round_trip_and_refusals() -> None:
    args = {"method": "GET", "target": "/internal/v1/x?limit=1", "tenant": "t1"}
    headers = internal_auth.sign("k" * 32, **args, now=1000)
    ok = {
        "timestamp": headers[internal_auth.TIMESTAMP_HEADER],
        "signature": headers[internal_auth.SIGNATURE_HEADER],
        "body": b"",
        "window_s": 60,
    }
    assert internal_auth.verify("k" * 32, **args, **ok, now=1030) is None  # type: ignore[arg-type]
    assert internal_auth.verify("k" * 32, **args, **ok, now=1061)  # type: ignore[arg-type]
    assert internal_auth.verify("x" * 32, **args, **ok, now=1000)  # type: ignore[arg-type]
    assert internal_auth.verify(
        "k" * 32,
        **{**args, "tenant": "t2"},
        **ok,
        now=1000,  # type: ignore[arg-type]
    )
    assert internal_auth.verify(
        "k" * 32,
        **args,
        **{**ok, "body": b"{}"},
        now=1000,  # type: ignore[arg-type]
    )
    assert internal_auth.verify(
        "k" * 32,
        **args,
        **{**ok, "signature": None},
        now=1000,  # type: ignore[arg-type]
    )


def test_production_refuses_the_development_internal_secret() -> None:
    pg = "postgresql://db/atelier"
    for cls in (GatewaySettings, RecommenderSettings):
        with pytest.raises(ValidationError, match="ATELIER_INTERNAL_SECRET"):
            cls(environment="production", database_url=pg)
        with pytest.raises(ValidationError, match="ATELIER_INTERNAL_SECRET"):
            cls(environment="production", database_url=pg, internal_secret="short")
        cls(environment="production", database_url=pg, internal_secret="r" * 32)
        assert cls().internal_secret.get_secret_value() == DEV_INTERNAL_SECRET


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "fd00:ec2::254",
        "fe80::1",
        "224.0.0.251",
        "0.0.0.0",
        "100.64.0.1",
        "240.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_webhook_addresses_are_refused(address: str) -> None:
    assert webhooks.address_problem(ipaddress.ip_address(address)) is not None
    url = f"http://{'[' + address + ']' if ':' in address else address}/h"
    problem = webhooks.registration_problem(url, allow_private=False)
    assert problem and "public addresses only" in problem
    assert webhooks.registration_problem(url, allow_private=True) is None


def test_public_webhook_addresses_and_signatures() -> None:
    assert webhooks.address_problem(ipaddress.ip_address("93.184.216.34")) is None
    assert webhooks.address_problem(ipaddress.ip_address("2606:4700::1111")) is None
    headers = webhooks.sign("s", b"{}", now=2000)
    ts, sig = headers[webhooks.TIMESTAMP_HEADER], headers[webhooks.SIGNATURE_HEADER]
    assert webhooks.verify_signature("s", b"{}", timestamp=ts, signature_header=sig, now=2100)
    assert not webhooks.verify_signature("s", b"{}", timestamp=ts, signature_header=sig, now=2301)
    assert not webhooks.verify_signature("t", b"{}", timestamp=ts, signature_header=sig, now=2000)
    assert not webhooks.verify_signature("s", b"{}", timestamp=None, signature_header=sig)
