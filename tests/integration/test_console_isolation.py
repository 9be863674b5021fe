"""The multi-tenant walk through the web console: tenant B signed in to the console opens every
console page (and the console's API proxy) with tenant A's ids; the pages must answer as they do
for ids that exist nowhere and show none of A's data (tests/tenant_walk.py has tenant A).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.conftest import Stack
from tests.tenant_walk import TenantA, leaks, nowhere, populate, shape, snapshot, walk_client

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pg_url: str, models_dir: Path, tmp_path: Path) -> Iterator[tuple[Stack, TestClient]]:
    with walk_client(pg_url, models_dir, tmp_path) as stack_and_client:
        yield stack_and_client


# The console's own pages (not in the OpenAPI schema); sign-in and static files hold no data.
CONSOLE_SKIP = {"/console", "/console/", "/console/login", "/console/logout"}
# Query parameters of console pages that name a tenant's things.
CONSOLE_QUERY = {"user_id": "user_id", "item_id": "item_id", "tag": "name"}
# API paths tried through the console's proxy, with the kind of A's id each takes.
PROXIED = {
    "content/{}": "content_id",
    "jobs/{}": "job_id",
    "taggers/{}": "tagger_id",
    "users/{}/interactions": "user_id",
}


def _console_routes(app: Any) -> list[APIRoute]:
    def walk(routes: list[Any]) -> Iterator[APIRoute]:
        for r in routes:
            if isinstance(r, APIRoute):
                yield r
            elif hasattr(r, "original_router"):  # FastAPI's included routers
                yield from walk(r.original_router.routes)

    return [
        r for r in walk(app.routes) if r.path.startswith("/console") and r.path not in CONSOLE_SKIP
    ]


def test_tenant_b_sees_none_of_tenant_a_in_the_console(client: tuple[Stack, TestClient]) -> None:
    stack, c = client
    a = populate(stack, c)
    before = snapshot(stack, a.tenant_id)
    _, key_b = stack.new_key(("read", "write", "admin"))
    signed_in = c.post("/console/login", data={"api_key": key_b}, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    assert c.cookies  # the client sends B's console cookie from now on
    # The console's script proxy reaches the API under B's key: a few of A's API paths.
    values = {**a.ids, "path": [t.format(a.ids[k][0]) for t, k in PROXIED.items()]}
    problems: list[str] = []
    routes = _console_routes(c.app)
    assert any("{content_id}" in r.path for r in routes), [r.path for r in routes]
    for route in routes:
        params = [p.name for p in route.dependant.path_params]
        unknown = [p for p in params if p not in values]
        assert not unknown, f"{route.path}: give the walk A's values for {unknown}"
        queries = [
            CONSOLE_QUERY[q.name] for q in route.dependant.query_params if q.name in CONSOLE_QUERY
        ]
        names = [q.name for q in route.dependant.query_params if q.name in CONSOLE_QUERY]
        path = route.path.replace(":path}", "}")
        for combo in itertools.product(*(values[p] for p in [*params, *queries])):
            real = dict(zip([*params, *names], combo, strict=True))
            fake = {k: _nowhere_like(k, v, a) for k, v in real.items()}
            r = c.get(path.format(**real), params=_query(real, names),
                      follow_redirects=False)  # fmt: skip
            control = c.get(path.format(**fake), params=_query(fake, names),
                            follow_redirects=False)  # fmt: skip
            where = f"GET {path.format(**real)} {_query(real, names)}"
            if r.status_code != control.status_code or r.status_code == 403 or r.status_code >= 500:
                problems.append(f"{where}: {r.status_code} (nowhere: {control.status_code})")
            elif leaked := leaks(r, a, where):
                problems.append(f"{where}: shows {leaked}")
            elif shape(r.text, real) != shape(control.text, fake):
                problems.append(f"{where}: answers differ from the nowhere ids'")
    assert not problems, "\n".join(problems)
    assert snapshot(stack, a.tenant_id) == before


def _nowhere_like(name: str, value: str, a: TenantA) -> str:
    """``nowhere(name)``; for a proxied API path, the path with A's id swapped for one."""
    if name != "path":
        return nowhere(name)
    template, kind = next((t, k) for t, k in PROXIED.items() if t.format(a.ids[k][0]) == value)
    return template.format(nowhere(kind))


def _query(values: dict[str, str], names: list[str]) -> dict[str, str]:
    return {n: values[n] for n in names}
