"""Jobs, models and their evaluation plots, and the generator playground."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.gateway.console import plots
from services.gateway.console.internal import ApiDep
from services.gateway.console.templating import page

router = APIRouter(prefix="/console", include_in_schema=False)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL = frozenset({"succeeded", "failed", "cancelled"})


async def _jobs(api: ApiDep, status: str | None) -> list[dict[str, Any]]:
    return (await api.get("/v1/jobs", limit=100, status=status))["items"]


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request, api: ApiDep, status: JobState | None = None) -> Response:
    jobs = await _jobs(api, status)
    return page(request, "jobs.html", jobs=jobs, status=status or "", final=FINAL)


@router.get("/jobs/rows", response_class=HTMLResponse)
async def job_rows(request: Request, api: ApiDep, status: JobState | None = None) -> Response:
    """The table's body alone: what the job monitor polls."""
    return page(request, "_job_rows.html", jobs=await _jobs(api, status), final=FINAL)


def _newer_first(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(versions, key=lambda v: str(v.get("created_at") or v["version"]), reverse=True)


@router.get("/models", response_class=HTMLResponse)
async def models_page(request: Request, api: ApiDep) -> Response:
    listing = await api.get("/v1/models")
    recommender, recommender_error = await api.get_or_none("/v1/recommender/models")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for version in listing["items"]:
        by_name.setdefault(version["name"], []).append(version)
    return page(
        request,
        "models.html",
        models={name: _newer_first(vs) for name, vs in sorted(by_name.items())},
        recommender=_newer_first(recommender or []),
        recommender_error=recommender_error,
    )


def _active(versions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The active version of a kind, the tenant's own before a bundled one (as generation
    picks it)."""
    mine = [v for v in versions if v["kind"] == kind and v["active"]]
    mine.sort(key=lambda v: v["scope"] != "tenant")
    return mine[0] if mine else None


def _points(curve: dict[str, Any], measure: str) -> list[tuple[float, float]]:
    return list(zip(curve["k"], curve[measure], strict=True))


def recommender_charts(version: dict[str, Any] | None) -> list[Any]:
    if version is None:
        return []
    metrics = version.get("metrics") or {}
    curves = metrics.get("curves") or {}
    selected, baseline = curves.get("selected"), curves.get("popularity")
    if selected and baseline:
        name = f"{selected.get('name', 'selected')} (active)"
        charts = []
        for measure, label in (("ndcg", "NDCG@k"), ("recall", "Recall@k")):
            charts.append(
                plots.line_chart(
                    [
                        plots.Series(name, _points(selected, measure)),
                        plots.Series("popularity", _points(baseline, measure)),
                    ],
                    title=f"{label} on validation, version {version['version']}",
                    x_label="k",
                    y_label=label,
                    chart_id=f"reco-{measure}",
                    y_from_zero=True,
                )
            )
        return charts
    # Versions trained before curves were recorded: each candidate at k = 10 only.
    candidates = metrics.get("candidates") or []
    series = [
        plots.Series(c["name"], [(10.0, float(c["validation"][m]))])
        for c in candidates
        for m in ("ndcg",)
        if c.get("validation")
    ]
    return [
        plots.line_chart(
            series,
            title=f"NDCG@10 of each candidate, version {version['version']}",
            x_label="k",
            y_label="NDCG@k",
            chart_id="reco-ndcg",
            y_from_zero=True,
        )
    ]


def generator_charts(text: dict[str, Any] | None, image: dict[str, Any] | None) -> list[Any]:
    charts = []
    if text is not None:
        m = text.get("metrics") or {}
        history = m.get("history") or []
        series = [plots.Series("RNN", [(h["epoch"], h["val_bpc"]) for h in history])]
        for key, name in (("ngram_val_bpc", "n-gram"), ("mixture_val_bpc", "served mixture")):
            if isinstance(m.get(key), int | float) and history:
                series.append(plots.Series(name, [(1, m[key]), (history[-1]["epoch"], m[key])]))
        charts.append(
            plots.line_chart(
                series,
                title=f"Text generator {text['name']} {text['version']}: validation bits/char",
                x_label="epoch",
                y_label="bits per character",
                chart_id="gen-bpc",
            )
        )
    if image is not None:
        m = image.get("metrics") or {}
        selection = m.get("selection") or []
        series = [plots.Series("FID vs training images", [
            (s["step"], s["fid_vs_train"]) for s in selection
        ])]  # fmt: skip
        charts.append(
            plots.line_chart(
                series,
                title=f"Image generator {image['name']} {image['version']}: FID over training",
                x_label="step",
                y_label="FID",
                chart_id="gen-fid",
                y_from_zero=True,
            )
        )
    return charts


@router.get("/evaluation", response_class=HTMLResponse)
async def evaluation_page(request: Request, api: ApiDep) -> Response:
    recommender, _ = await api.get_or_none("/v1/recommender/models")
    active = next((v for v in recommender or [] if v["active"]), None)
    versions = (await api.get("/v1/models"))["items"]
    text, image = _active(versions, "text_generator"), _active(versions, "image_generator")
    return page(
        request,
        "evaluation.html",
        recommender=active,
        recommender_charts=recommender_charts(active),
        generator_charts=generator_charts(text, image),
        text=text,
        image=image,
    )


@router.get("/playground", response_class=HTMLResponse)
async def playground(
    request: Request, api: ApiDep, tag: Annotated[str | None, Query(max_length=200)] = None
) -> Response:
    versions = (await api.get("/v1/models"))["items"]
    text, image = _active(versions, "text_generator"), _active(versions, "image_generator")
    return page(
        request,
        "playground.html",
        text=text,
        image=image,
        text_tags=(text or {}).get("metrics", {}).get("tags") or [],
        tag=tag or "",
    )
