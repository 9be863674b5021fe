"""The gateway's hop to the recommender: aiohttp (what we use) vs httpx, same loopback server.

Starts a tiny uvicorn app answering a top-10-sized JSON body, then times pooled keep-alive GETs
from both clients, interleaved by round, and prints medians and the ratio.

    python bench/bench_proxy_client.py --rounds 5 --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import uvicorn
from fastapi import FastAPI, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model

BODY = (
    b'{"items":['
    + b",".join(b'{"id":"%d","score":0.5,"reason":"similar to x"}' % i for i in range(10))
    + b"]}"
)


def serve() -> tuple[uvicorn.Server, int]:
    app = FastAPI()

    @app.get("/x")
    async def x() -> Response:
        return Response(BODY, media_type="application/json")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


async def main(rounds: int, requests: int, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    params = [("limit", "10")]
    headers = {"x-atelier-tenant": "t"}
    async with httpx.AsyncClient(base_url=base) as hc, aiohttp.ClientSession() as ac:

        async def via_httpx() -> None:
            r = await hc.get("/x", params=params, headers=headers)
            await r.aread()

        async def via_aiohttp() -> None:
            async with ac.get(base + "/x", params=params, headers=headers) as r:
                await r.read()

        clients = {"aiohttp (ours)": via_aiohttp, "httpx": via_httpx}
        for fn in clients.values():
            for _ in range(100):
                await fn()
        medians: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, fn in clients.items():
                times = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    await fn()
                    times.append(time.perf_counter() - t0)
                medians[name].append(statistics.median(times) * 1000)
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.2f}")
    print(
        f"aiohttp {aiohttp.__version__}, httpx {httpx.__version__}, uvicorn {uvicorn.__version__}"
    )
    print(f"{'client':<16} {'p50 ms (median of rounds)':>26}   per round")
    for name, ms in medians.items():
        print(f"{name:<16} {statistics.median(ms):>26.3f}   {[round(m, 3) for m in ms]}")
    ratio = statistics.median(medians["httpx"]) / statistics.median(medians["aiohttp (ours)"])
    print(f"httpx / aiohttp: {ratio:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    server, port = serve()
    try:
        asyncio.run(main(args.rounds, args.requests, port))
    finally:
        server.should_exit = True
