"""Vocabulary facets and single-label taggers on AG News, through the public HTTP API.

    python -m bench.datasets fetch-from-git /work/.mirror/suuuch+TransformerClassification/repo \
        data/ag_news_csv/test.csv ag_news
    python -m bench.bench_tag_facets [--sizes 16 64 256 1024] [--test-per-topic 250]

Starts the suite (`atelier run`, SQLite, the built serving models linked in, as
bench_reco_quality does), then, as one tenant:

1. uploads the labelled pool (1,024 texts per topic, the few-shot examples and the tenant's
   unlabelled corpus), creates one ``single`` tagger per size, labels n texts per topic for each
   and trains them;
2. puts a vocabulary of the four topics in one ``single`` facet;
3. uploads the 1,000 held-out texts (250 per topic) and reads their tags: the facet's entry and
   each tagger's label.

Beside them, on the same MiniLM embeddings computed here with the same model files: the
embedding argmax (each entry's mean-prototype, the pre-facet zero-shot), the pre-facet
threshold (0.5) and scikit-learn ``LogisticRegression()`` on the same examples.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.bench_reco_quality import Suite, _wait_job
from bench.datasets import AG_NEWS_CLASSES, load_ag_news

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
# Entry names differ from AG News' class names and from every tagger's labels: the API shows
# one tag per name (a person's, else the best score), so names shared with a keyphrase or with
# another model's label would hide each other.
TOPICS = {
    "world news": [
        "World news: politics, governments, elections, wars and international affairs.",
        "Presidents, prime ministers and diplomats meet over a conflict abroad.",
        "Troops, rebels and a bombing kill dozens; the United Nations calls for peace talks.",
    ],
    "sports news": [
        "Sports news: games, matches, teams, players and tournaments.",
        "The team won the game after the quarterback threw two touchdowns.",
        "A tennis star reached the final; the Olympics and the World Cup.",
    ],
    "business news": [
        "Business news: companies, markets, the economy, earnings and finance.",
        "Shares fell on Wall Street as oil prices rose and the dollar weakened.",
        "The company reported quarterly profit and agreed to a merger deal.",
    ],
    "science and technology news": [
        "Science and technology news: computers, software, the internet, space and research.",
        "Microsoft, Google and Apple release new software, chips and phones.",
        "Scientists discover a new species; NASA launches a spacecraft.",
    ],
}


ENTRY = dict(zip(AG_NEWS_CLASSES, TOPICS, strict=True))


def _label(topic: str, n: int) -> str:
    return f"{topic} {n}"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split(labels: np.ndarray, test_per_topic: int, pool_per_topic: int) -> tuple[Any, Any]:
    """Held-out test rows and the pool (examples + corpus), disjoint, balanced, seeded."""
    rng = np.random.default_rng(SEED)
    test, pool = [], []
    for c in range(len(AG_NEWS_CLASSES)):
        rows = rng.permutation(np.flatnonzero(labels == c))
        test.append(rows[:test_per_topic])
        pool.append(rows[test_per_topic : test_per_topic + pool_per_topic])
    # Uploaded in a mixed order, as a site's content arrives.
    return rng.permutation(np.concatenate(test)), rng.permutation(np.concatenate(pool))


def examples_for(labels: np.ndarray, pool: np.ndarray, n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    return np.concatenate(
        [rng.permutation(pool[labels[pool] == c])[:n] for c in range(len(AG_NEWS_CLASSES))]
    )


def upload(c: httpx.Client, texts: list[str], prefix: str) -> list[str]:
    ids, jobs = [], []
    for start in range(0, len(texts), 100):
        chunk = texts[start : start + 100]
        r = c.post(
            "/v1/content:batch",
            json={
                "items": [
                    {"external_id": f"{prefix}-{start + k}", "text": t} for k, t in enumerate(chunk)
                ]
            },
        )
        r.raise_for_status()
        ids += [i["id"] for i in r.json()["items"]]
        jobs.append(r.json()["job_id"])
    for job in jobs:
        assert _wait_job(c, job)["status"] == "succeeded"
    return ids


def local_baselines(
    texts: list[str],
    labels: np.ndarray,
    test: np.ndarray,
    train: dict[int, np.ndarray],
    models: Path,
) -> dict[str, Any]:
    """Argmax / threshold zero-shot and LogisticRegression on the same MiniLM embeddings."""
    from sklearn.linear_model import LogisticRegression

    from shared.inference.registry import ModelRegistry
    from workers.tagging.text import TextEmbedder, VocabularyTerm

    embedder = ModelRegistry(models).get("text_embedder", TextEmbedder)
    rows = np.unique(np.concatenate([test, *train.values()]))
    emb = dict(zip(rows, embedder.embed_documents([texts[i] for i in rows]), strict=True))
    x_test = np.stack([emb[i] for i in test])
    vocab = [VocabularyTerm(n, d) for n, d in TOPICS.items()]
    sims = embedder.similarities(x_test, vocab)
    probs = embedder.probabilities(sims)
    hit = probs.max(axis=1) >= embedder.default_threshold
    out: dict[str, Any] = {
        "argmax": float((sims.argmax(axis=1) == labels[test]).mean()),
        "threshold": float(((sims.argmax(axis=1) == labels[test]) & hit).mean()),
        "threshold_abstained": float(1 - hit.mean()),
        "logreg": {},
    }
    for n, rows_n in train.items():
        x = np.stack([emb[i] for i in rows_n])
        lr = LogisticRegression(max_iter=1000).fit(x, labels[rows_n])
        out["logreg"][n] = float((lr.predict(x_test) == labels[test]).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--test-per-topic", type=int, default=250)
    ap.add_argument("--models", type=Path, default=ROOT / "var" / "models")
    args = ap.parse_args()
    texts, labels = load_ag_news()
    test, pool = split(labels, args.test_per_topic, max(args.sizes))
    train = {n: examples_for(labels, pool, n) for n in args.sizes}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-facets-") as tmp:
        suite = Suite(Path(tmp), _port(), _port(), args.models)
        try:
            suite.wait_ready()
            key = suite.key("facets")
            with httpx.Client(
                base_url=suite.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            ) as c:
                got = through_api(c, texts, labels, test, pool, train)
        finally:
            suite.stop()
    base = local_baselines(texts, labels, test, train, args.models)
    report(got, base, labels[test], time.monotonic() - started)


def through_api(
    c: httpx.Client,
    texts: list[str],
    labels: np.ndarray,
    test: np.ndarray,
    pool: np.ndarray,
    train: dict[int, np.ndarray],
) -> dict[str, Any]:
    pool_ids = dict(zip(pool, upload(c, [texts[i] for i in pool], "pool"), strict=True))
    sources: dict[str, int] = {}
    for n, rows in train.items():
        r = c.post(
            "/v1/taggers",
            json={
                "name": f"topic-{n}",
                "kind": "text",
                "labels": [_label(t, n) for t in AG_NEWS_CLASSES],
                "mode": "single",
            },
        )
        r.raise_for_status()
        tagger = r.json()
        examples = [
            {"content_id": pool_ids[i], "label": _label(AG_NEWS_CLASSES[labels[i]], n)}
            for i in rows
        ]
        for start in range(0, len(examples), 1000):
            c.post(
                f"/v1/taggers/{tagger['id']}/examples",
                json={"examples": examples[start : start + 1000]},
            ).raise_for_status()
        job = c.post(f"/v1/taggers/{tagger['id']}/train").json()["job_id"]
        result = _wait_job(c, job)
        assert result["status"] == "succeeded", result
        sources[f"{tagger['model']}:{result['result']['version']}"] = n
    c.put(
        "/v1/vocabulary",
        json={
            "facets": [{"name": "topic", "mode": "single"}],
            "entries": [
                {"name": name, "facet": "topic", "descriptions": d} for name, d in TOPICS.items()
            ],
        },
    ).raise_for_status()
    test_ids = upload(c, [texts[i] for i in test], "test")
    facet_pred, tagger_pred = [], {n: [] for n in train}
    for cid in test_ids:
        tags = c.get(f"/v1/content/{cid}").json()["tags"]
        facet_pred.append([t["name"] for t in tags if t["name"] in TOPICS])
        for source, n in sources.items():
            # Back to the class name, for scoring.
            tagger_pred[n].append(
                [t["name"].rsplit(" ", 1)[0] for t in tags if t["source"] == source]
            )
    return {"facet": facet_pred, "taggers": tagger_pred}


def _as_classes(preds: list[list[str]]) -> list[list[str]]:
    back = {v: k for k, v in ENTRY.items()}
    return [[back.get(p, p) for p in ps] for ps in preds]


def _score(preds: list[list[str]], truth: np.ndarray) -> tuple[float, float, float]:
    right = sum(
        len(p) == 1 and p[0] == AG_NEWS_CLASSES[y] for p, y in zip(preds, truth, strict=True)
    )
    none = sum(not p for p in preds)
    several = sum(len(p) > 1 for p in preds)
    return right / len(preds), none / len(preds), several / len(preds)


def report(got: dict[str, Any], base: dict[str, Any], truth: np.ndarray, elapsed: float) -> None:
    n = len(truth)
    acc, none, several = _score(_as_classes(got["facet"]), truth)
    print(f"AG News, {n} held-out texts ({n // 4} per topic); {elapsed:.0f} s")
    print("\n(a) zero-shot, 4 entries with 3 descriptions each")
    print(f"  {'method':44} {'accuracy':>9} {'no tag':>7} {'>1 tag':>7}")
    print(f"  {'pre-facet entries (threshold 0.5), local':44} {base['threshold']:9.1%} "
          f"{base['threshold_abstained']:7.1%} {'':>7}")  # fmt: skip
    print(f"  {'embedding argmax (mean prototype), local':44} {base['argmax']:9.1%} "
          f"{0:7.1%} {0:7.1%}")  # fmt: skip
    print(f"  {'single facet, through the API':44} {acc:9.1%} {none:7.1%} {several:7.1%}")
    print("\n(b) few-shot, labelled texts per topic")
    print(f"  {'n':>5} {'single tagger (API)':>20} {'no tag':>7} {'LogisticRegression':>19}")
    for size, preds in got["taggers"].items():
        a, nn, _ = _score(preds, truth)
        print(f"  {size:5d} {a:20.1%} {nn:7.1%} {base['logreg'][size]:19.1%}")


if __name__ == "__main__":
    main()
