"""The `atelier` command: tenants, API keys, migrations, models, and running the suite."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.config import CommonSettings
from suite.cli_api import register as register_api_commands

app = typer.Typer(no_args_is_help=True, help=__doc__)
tenants = typer.Typer(no_args_is_help=True, help="Manage tenants.")
keys = typer.Typer(no_args_is_help=True, help="Manage API keys.")
db = typer.Typer(no_args_is_help=True, help="Database migrations.")
app.add_typer(tenants, name="tenants")
app.add_typer(keys, name="keys")
app.add_typer(db, name="db")


def _settings() -> CommonSettings:
    return CommonSettings()


@tenants.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant (one CMS site or customer)."""
    from shared.auth import create_tenant, get_tenant
    from shared.db.session import session_scope

    with session_scope(_settings().sqlalchemy_url) as s:
        if get_tenant(s, name_or_id=name):
            typer.echo(f"tenant {name!r} already exists", err=True)
            raise typer.Exit(1)
        t = create_tenant(s, name=name)
        typer.echo(f"tenant {t.name} created: id {t.id}")


@tenants.command("list")
def tenants_list() -> None:
    from sqlalchemy import select

    from shared.db.models import Tenant
    from shared.db.session import session_scope

    with session_scope(_settings().sqlalchemy_url) as s:
        for t in s.scalars(select(Tenant).order_by(Tenant.created_at)):
            typer.echo(f"{t.id}  {t.name}")


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="tenant name or id")],
    scopes: Annotated[str, typer.Option(help="comma-separated: read,write,admin")] = "read,write",
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from shared.auth import create_api_key, get_tenant
    from shared.db.session import session_scope

    with session_scope(_settings().sqlalchemy_url) as s:
        t = get_tenant(s, name_or_id=tenant)
        if t is None:
            typer.echo(f"no tenant {tenant!r}; create it with `atelier tenants create`", err=True)
            raise typer.Exit(1)
        try:
            row, plaintext = create_api_key(
                s, tenant_id=t.id, scopes=[x.strip() for x in scopes.split(",") if x.strip()],
                name=name,
            )  # fmt: skip
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"key id {row.id} for tenant {t.name} (scopes {','.join(row.scopes)}):")
        typer.echo(plaintext)


@keys.command("revoke")
def keys_revoke(key_id: str) -> None:
    from shared.auth import revoke_key
    from shared.db.session import session_scope

    with session_scope(_settings().sqlalchemy_url) as s:
        if not revoke_key(s, key_id=key_id):
            typer.echo(f"no key {key_id}", err=True)
            raise typer.Exit(1)
        typer.echo(f"revoked {key_id}")


@db.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (run once before services start)."""
    from shared.db.migrate import upgrade

    upgrade(_settings().sqlalchemy_url, revision)
    typer.echo("database is at the latest revision")


@app.command("run")
def run(
    var_dir: Annotated[Path, typer.Option(help="data directory")] = Path("var"),
    gateway_port: Annotated[int, typer.Option(envvar="ATELIER_GATEWAY_PORT")] = 8000,
    recommender_port: Annotated[int, typer.Option(envvar="ATELIER_RECOMMENDER_PORT")] = 8001,
    build_models: Annotated[
        bool,
        typer.Option(
            help="build the missing models serving needs first, then the bundled generators "
            "in the background"
        ),
    ] = True,
) -> None:
    """Run the whole suite on this machine (gateway, recommender, workers, beat)."""
    from suite.supervisor import Supervisor

    sup = Supervisor(
        var_dir=var_dir,
        gateway_port=gateway_port,
        recommender_port=recommender_port,
        build_models=build_models,
    )
    sys.exit(sup.run())


@app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, for scripts")] = False,
) -> None:
    """Queues, the workers that answer, jobs by state, the bundled models' versions and their
    builds under way with progress."""
    from suite.status import collect, render

    report = collect(_settings())
    typer.echo(json.dumps(report, indent=2) if as_json else render(report))


models_app = typer.Typer(
    invoke_without_command=True,
    help="Build the bundled models (no subcommand); list and activate versions over the API.",
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context, force: bool = False) -> None:
    """Build every bundled model (needs the `train` extra)."""
    # `atelier models` alone builds, as it did before `list` and `activate` joined it.
    if ctx.invoked_subcommand is not None:
        return
    from workers.training.build.__main__ import main

    args = ["--force"] if force else []
    os.environ.setdefault("ATELIER_MODELS_DIR", str(_settings().models_dir))
    sys.exit(main(args))


reco = typer.Typer(no_args_is_help=True, help="Recommender tools.")
app.add_typer(reco, name="reco")


@reco.command("evaluate")
def reco_evaluate(
    interactions: Annotated[
        Path, typer.Option(help="CSV: user,item,value[,timestamp] (unix seconds)")
    ],
    plot: Annotated[Path | None, typer.Option(help="write a PNG bar chart here")] = None,
    budget_s: Annotated[float, typer.Option(help="tuning time budget in seconds")] = 120.0,
) -> None:
    """The model Atelier selects next to tuned peers (implicit ALS/BPR, EASE, RP3beta,
    popularity) on each user's latest 20% of events: NDCG@10 with 95% CIs, recall, coverage."""
    from ranking.report import evaluate_csv

    if not interactions.is_file():
        typer.echo(f"no such file: {interactions}", err=True)
        raise typer.Exit(1)
    typer.echo(evaluate_csv(interactions, plot=plot, budget_s=budget_s))


# Commands that drive a running suite over its HTTP API, with the Python client.
register_api_commands(app, models_app)

if __name__ == "__main__":
    app()
