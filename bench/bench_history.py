"""What recording runs costs: warm run p50 and throughput, run history on and off, over HTTP.

    .venv/bin/python bench/bench_history.py [--runs 1000] [--concurrency 32]

Each setting gets its own `functions serve` (real Node host, SQLite history in a fresh storage folder):
sequential runs give the warm p50 and p99, then `concurrency` clients give the throughput.
"""

import argparse
import asyncio
import statistics
import time

import httpx
from bench_service import serving

HELLO = {"functions": {"hi": {"code": "return 'hi ' + name;", "parameters": {"name": {"type": "string"}}}}}
SETTINGS = {
    "history on (100 kept, parameters kept)": {"FUNCTIONS_RUN_HISTORY": "100"},
    "history on, parameters off": {"FUNCTIONS_RUN_HISTORY": "100", "FUNCTIONS_RUN_HISTORY_PARAMETERS": "no"},
    "history off": {"FUNCTIONS_RUN_HISTORY": "0"},
}
RUN = "/v2/functions/bench/run/hi"
BODY = {"parameters": {"name": "Ada"}}


def sequential(client: httpx.Client, runs: int) -> list[float]:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.post(RUN, json=BODY)
        took.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
    return took


async def concurrent(base_url: str, runs: int, concurrency: int) -> float:
    """Runs per second with `concurrency` clients sharing `runs` runs."""
    left = iter(range(runs))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for _ in left:
                answer = await client.post(RUN, json=BODY)
                assert answer.status_code == 200, answer.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return runs / (time.perf_counter() - started)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--runs", type=int, default=1000)
    options.add_argument("--concurrency", type=int, default=32)
    args = options.parse_args()
    print(f"{'setting':<40} {'p50 ms':>8} {'p99 ms':>8} {f'runs/s x{args.concurrency}':>14} {'kept':>6}")
    for name, settings in SETTINGS.items():
        with serving(settings) as client:
            assert client.post("/v2/functions/bench", json=HELLO).status_code == 200
            sequential(client, 50)  # warm: the worker is loaded, the database file made
            took = sorted(sequential(client, args.runs))
            rate = asyncio.run(concurrent(str(client.base_url), args.runs * 2, args.concurrency))
            kept = len(client.get("/v2/functions/bench/runs?limit=500").json()["runs"])
        p50, p99 = statistics.median(took), took[int(len(took) * 0.99) - 1]
        print(f"{name:<40} {p50:>8.2f} {p99:>8.2f} {rate:>14.0f} {kept:>6}")


if __name__ == "__main__":
    main()
