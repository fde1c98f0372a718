"""The baseline for apply's overhead: the throw-away script users write today.

anyio + httpx + a semaphore; no ledger, no pacing, no retries, no reconciliation.
Usage: naive_launcher.py BASE_URL ORG TOKEN N CONCURRENCY  -> prints "created <n> in <s>s".
"""

from __future__ import annotations

import sys
import time

import anyio
import httpx


async def main(base: str, org: str, token: str, n: int, concurrency: int) -> None:
    sem = anyio.Semaphore(concurrency)
    created = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30
    ) as client:

        async def one(i: int) -> None:
            nonlocal created
            async with sem:
                r = await client.post(
                    f"/v3/organizations/{org}/sessions",
                    json={
                        "prompt": f"Fix repo-{i:05d}",
                        "repos": [f"acme/repo-{i:05d}"],
                        "tags": ["naive", f"naive-{i}"],
                        "max_acu_limit": 3,
                    },
                )
                if r.status_code == 200:
                    created += 1

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        elapsed = time.perf_counter() - start
    print(f"created {created} in {elapsed:.3f}s")


if __name__ == "__main__":
    b, o, t, n, c = sys.argv[1:6]
    anyio.run(main, b, o, t, int(n), int(c))
