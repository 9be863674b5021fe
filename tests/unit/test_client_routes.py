"""The Python client (clients/python) covers every public route of the gateway, and stands alone.

The gateway's OpenAPI is the list of routes: a route added there without a client method fails
here, for the sync and the async client alike.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from atelier_client import AsyncAtelier, Atelier, routes

from services.gateway.main import create_app
from shared.config import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python" / "atelier_client"


@pytest.fixture(scope="module")
def gateway_routes(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("openapi")
    settings = GatewaySettings(
        environment="test",
        database_url=f"sqlite:///{tmp / 'a.db'}",
        storage_url=f"file://{tmp / 'blobs'}",
        models_dir=tmp / "models",
    )
    spec = create_app(settings).openapi()
    return {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}


@pytest.mark.parametrize("client", [Atelier, AsyncAtelier])
def test_every_gateway_route_has_a_client_method(
    client: type[Atelier] | type[AsyncAtelier], gateway_routes: set[tuple[str, str]]
) -> None:
    covered = routes(client)
    missing = sorted(gateway_routes - set(covered))
    assert not missing, f"{client.__name__} has no method for {missing}"
    stale = sorted(set(covered) - gateway_routes)
    assert not stale, f"{client.__name__} calls routes the gateway does not have: {stale}"


def test_sync_and_async_clients_have_the_same_methods() -> None:
    def names(client: type[Atelier] | type[AsyncAtelier]) -> dict[tuple[str, str], list[str]]:
        return {
            key: sorted(m.replace("AsyncAtelier.", "Atelier.") for m in methods)
            for key, methods in routes(client).items()
        }

    assert names(Atelier) == names(AsyncAtelier)


def test_the_client_imports_only_httpx_and_the_standard_library() -> None:
    # A CMS installs atelier-client without the server: no server package, no pydantic.
    allowed = set(sys.stdlib_module_names) | {"httpx", "atelier_client"}
    for path in CLIENT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
