"""`atelier import`, `atelier train`, `atelier models list|activate`: the suite driven through
its HTTP API with the Python client, as a CMS would, so they work against any running gateway.

Each command shows rich progress bars on stderr, or prints one JSON document with `--json`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from atelier_client import Atelier, Job

import_app = typer.Typer(
    no_args_is_help=True, help="Bulk imports through the HTTP API; safe to run again."
)
train_app = typer.Typer(no_args_is_help=True, help="Train models through the HTTP API.")

UrlOpt = Annotated[str, typer.Option("--url", envvar="ATELIER_URL", help="the gateway's base URL")]
KeyOpt = Annotated[
    str, typer.Option("--key", envvar="ATELIER_API_KEY", help="API key (atelier keys create)")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print one JSON document instead of progress bars")
]
DEFAULT_URL = "http://127.0.0.1:8000"
err = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "-/s", style="progress.data.speed")


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )


@contextmanager
def _client(url: str, key: str) -> Iterator[Atelier]:
    try:
        from atelier_client import Atelier, AtelierError
    except ImportError as exc:  # a separate distribution: the server's extras do not bring it
        err.print("the Python client is not installed: pip install ./clients/python")
        raise typer.Exit(2) from exc
    if not key:
        err.print("no API key: pass --key or set ATELIER_API_KEY (atelier keys create)")
        raise typer.Exit(2)
    client = Atelier(url, key)
    try:
        yield client
    except AtelierError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        client.close()


def _emit(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


# --- import --------------------------------------------------------------------------------


@import_app.command("content")
def import_content(
    directory: Annotated[Path, typer.Argument(help="a folder of images and .txt/.md files")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    concurrency: Annotated[int, typer.Option(min=1, max=32)] = 4,
    prefix: Annotated[str, typer.Option(help="prepended to each file's external_id")] = "",
    update: Annotated[bool, typer.Option(help="replace (and re-tag) items already there")] = False,
    wait: Annotated[bool, typer.Option(help="wait until every upload is tagged")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Upload a folder; each file's external_id is PREFIX + its path relative to DIRECTORY.

    Running it again skips the files already uploaded (listed first by external_id), so an
    interrupted import resumes where it stopped; --update sends and re-tags them all instead.
    """
    from atelier_client.files import discover

    if not directory.is_dir():
        err.print(f"not a folder: {directory}")
        raise typer.Exit(2)
    total = len(discover(directory))
    with _client(url, key) as client, _progress(as_json) as bars:
        task = bars.add_task("uploading", total=total)
        results = client.content.upload_folder(
            directory,
            concurrency=concurrency,
            on_conflict="update" if update else "skip",
            skip_existing=not update,
            external_id_prefix=prefix,
            on_result=lambda _r: bars.advance(task),
        )
        jobs = [] if not wait else _wait_jobs(client, bars, {r.job_id for r in results if r.job_id})
    counts = Counter(r.status for r in results)
    failed = [r for r in results if not r.ok]
    if as_json:
        _emit(
            {
                "counts": dict(counts),
                "results": [r.to_dict() for r in results],
                "jobs": [j.to_dict() for j in jobs],
            }
        )
    else:
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no files"
        err.print(f"{total} files: {summary}")
        for r in failed:
            err.print(f"  [red]failed[/red] {r.path}: {r.error_code}: {r.error}")
    if failed or any(not j.succeeded for j in jobs):
        raise typer.Exit(1)


def _wait_jobs(client: Atelier, bars: Progress, job_ids: set[str]) -> list[Job]:
    task = bars.add_task("tagging", total=len(job_ids))
    done = []
    for job_id in sorted(job_ids):
        done.append(client.jobs.wait(job_id, timeout=3600))
        bars.advance(task)
    return done


def _state_path(file: Path, state: Path | None) -> Path:
    return state or file.with_name(file.name + ".atelier-state.json")


def _read_state(path: Path, file: Path, total: int) -> int:
    """Rows already sent, or 0 when the state is missing or is not of this file as it is."""
    try:
        st = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0
    # An appended file keeps its prefix; a shorter or renamed one is imported from the start.
    # Either way nothing is counted twice: every event has an event_id the server deduplicates.
    if st.get("file") != file.name or st.get("size", 0) > file.stat().st_size:
        return 0
    rows = int(st.get("rows_done", 0))
    return rows if 0 <= rows <= total else 0


def _write_state(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


@import_app.command("events")
def import_events(
    file: Annotated[Path, typer.Argument(help="CSV: user_id,item_id[,event_type,value,...]")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 5000,
    state: Annotated[
        Path | None, typer.Option(help="progress file [default: FILE.atelier-state.json]")
    ] = None,
    restart: Annotated[bool, typer.Option(help="ignore the progress file")] = False,
    event_type: Annotated[str, typer.Option(help="for rows without an event_type")] = "view",
    as_json: JsonOpt = False,
) -> None:
    """Send a CSV of interaction events in batches, resuming after the last batch sent.

    Columns: user_id, item_id, and optionally event_type, value, timestamp (ISO 8601 or unix
    seconds) and event_id; a row without an event_id gets one derived from its content, so a
    file sent twice stores its events once.
    """
    from atelier_client.files import CsvError, count_rows

    if not file.is_file():
        err.print(f"no such file: {file}")
        raise typer.Exit(2)
    total = count_rows(file)
    state_file = _state_path(file, state)
    start = 0 if restart else _read_state(state_file, file, total)
    size = file.stat().st_size

    with _client(url, key) as client, _progress(as_json) as bars:
        task = bars.add_task("events", total=total, completed=start)

        def saved(summary: Any) -> None:
            _write_state(state_file, {"file": file.name, "size": size, **summary.to_dict()})
            bars.update(task, completed=summary.rows_done)

        try:
            summary = client.interactions.import_csv(
                file,
                batch_size=batch_size,
                start_row=start,
                default_event_type=event_type,
                on_batch=saved,
            )
        except CsvError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
    result = {"file": str(file), "rows": total, "resumed_at": start, **summary.to_dict()}
    if as_json:
        _emit(result)
    else:
        err.print(
            f"{total} rows ({start} sent before): {summary.stored} stored, "
            f"{summary.duplicates} already there, {summary.items_created} new items; "
            f"progress in {state_file}"
        )


# --- models --------------------------------------------------------------------------------


def models_list(
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    kind: Annotated[str | None, typer.Option(help="e.g. tenant_tagger")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Model versions: the bundled models, your taggers' and your recommender's."""
    with _client(url, key) as client:
        rows: list[dict[str, Any]] = [dict(m) for m in client.models.list(kind=kind)]
        if kind in (None, "recommender"):
            # Shown under the name `models activate` takes for them, once each.
            reco = [dict(m) for m in client.recommender.models()]
            internal = {m.get("name") for m in reco}
            rows = [r for r in rows if r.get("name") not in internal]
            rows += [{**m, "name": "recommender", "scope": "tenant"} for m in reco]
    if as_json:
        _emit(rows)
        return
    table = Table("name", "version", "kind", "scope", "active", "metrics")
    for m in rows:
        metrics = ", ".join(
            f"{k}={v:.3g}" for k, v in (m.get("metrics") or {}).items() if isinstance(v, float)
        )
        table.add_row(
            str(m.get("name")),
            str(m.get("version")),
            str(m.get("kind")),
            str(m.get("scope")),
            "*" if m.get("active") else "",
            metrics[:60],
        )
    Console().print(table)


def models_activate(
    name: Annotated[str, typer.Argument(help="a model's name, or `recommender`")],
    version: str,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Serve VERSION of one of your models from now on (roll back or forward)."""
    with _client(url, key) as client:
        if name == "recommender":
            row = client.recommender.activate(version)
        else:
            row = client.models.activate(name, version)
    if as_json:
        _emit(row)
    else:
        err.print(f"{name} {row.get('version', version)} is active")


# --- train ---------------------------------------------------------------------------------


WaitOpt = Annotated[bool, typer.Option(help="follow the jobs until they finish")]
TimeoutOpt = Annotated[float, typer.Option(help="seconds to wait for each job")]


def _follow(client: Atelier, jobs: list[Job], *, wait: bool, timeout: float, quiet: bool) -> None:
    """Progress bars from the jobs' own progress (0..1), then the summary; exit 1 on failure."""
    if wait:
        with _progress(quiet) as bars:
            for i, job in enumerate(jobs):
                task = bars.add_task(f"{job.type} {job.id[:8]}", total=100)

                def show(j: Job, task: Any = task) -> None:
                    bars.update(task, completed=round(j.progress * 100))

                jobs[i] = client.jobs.wait(job.id, timeout=timeout, on_progress=show)
    if quiet:
        _emit([j.to_dict() for j in jobs])
    else:
        for j in jobs:
            detail = f": {j.error}" if j.error else ""
            err.print(f"job {j.id} ({j.type}) {j.status}{detail}")
    if wait and any(not j.succeeded for j in jobs):
        raise typer.Exit(1)


@train_app.command("recommender")
def train_recommender(
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    budget_s: Annotated[float | None, typer.Option(help="tuning time budget")] = None,
    candidate: Annotated[
        list[str] | None, typer.Option(help="a model family to try (repeat); default all")
    ] = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 3600.0,
    as_json: JsonOpt = False,
) -> None:
    """Train the recommender on your interactions; the best model is activated."""
    with _client(url, key) as client:
        job = client.recommender.train(budget_s=budget_s, candidates=candidate)
        _follow(client, [job], wait=wait, timeout=timeout, quiet=as_json)


@train_app.command("taggers")
def train_taggers(
    tagger_ids: Annotated[list[str] | None, typer.Argument(help="default: every tagger")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 3600.0,
    as_json: JsonOpt = False,
) -> None:
    """Train your taggers on their labelled examples and reviewed tags."""
    with _client(url, key) as client:
        ids = tagger_ids or [t["id"] for t in client.taggers.list()]
        if not ids:
            err.print("no taggers: create one with POST /v1/taggers")
            raise typer.Exit(1)
        jobs = [client.taggers.train(i) for i in ids]
        _follow(client, jobs, wait=wait, timeout=timeout, quiet=as_json)


@train_app.command("generators")
def train_generators(
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    kind: Annotated[str, typer.Option(help="text, images or all")] = "all",
    tag: Annotated[str | None, typer.Option(help="train on content with this tag")] = None,
    budget_s: Annotated[float | None, typer.Option(help="training time budget")] = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 7200.0,
    as_json: JsonOpt = False,
) -> None:
    """Train your own text and/or image generator on your content."""
    if kind not in ("text", "images", "all"):
        err.print("--kind is text, images or all")
        raise typer.Exit(2)
    options: dict[str, Any] = {"filter": {"tag": tag} if tag else {}}
    if budget_s is not None:
        options["budget_s"] = budget_s
    with _client(url, key) as client:
        jobs = []
        if kind in ("text", "all"):
            jobs.append(client.generators.train_text(**options))
        if kind in ("images", "all"):
            jobs.append(client.generators.train_images(**options))
        _follow(client, jobs, wait=wait, timeout=timeout, quiet=as_json)


def register(app: typer.Typer, models: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    app.add_typer(train_app, name="train")
    models.command("list")(models_list)
    models.command("activate")(models_activate)
