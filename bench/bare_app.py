"""The baseline: a bare Starlette app answering the run route with a constant-shaped result.

It parses the same JSON body and answers the same shape as the service, on the same URL, served by
Hypercorn with the service's own settings: the difference between the two is what the service adds
(validation, the hop to the Node worker and back).

Usage: python bench/bare_app.py PORT
"""

import asyncio
import sys

from hypercorn.asyncio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from entrypoints.cli.main import hypercorn_config
from entrypoints.settings import Settings


async def run_hello(request: Request) -> Response:
    body = await request.json()
    name = body["parameters"]["name"]
    return JSONResponse({"result": "Hello " + name, "logs": [], "duration": 0.01})


async def healthcheck(request: Request) -> Response:
    return JSONResponse({"status": "ok"})  # only so run.py can wait for it the same way as for the service


app = Starlette(
    routes=[
        Route("/v2/functions/{workspace}/run/{function}", run_hello, methods=["POST"]),
        Route("/sys/healthcheck", healthcheck, methods=["GET"]),
    ]
)


def main() -> None:
    # The service's own Hypercorn config (1 worker, asyncio, no access log), so only the app differs.
    config = hypercorn_config(Settings(host="127.0.0.1", port=int(sys.argv[1])))
    # Starlette declares its ASGI callable with looser types than Hypercorn expects; it is a valid ASGI app.
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
