"""The /playground page: an editor and runner for workspaces, served with every asset local (no CDN).

The page and its assets hold no data, so they are served without the API key (see OPEN_PATHS in
middleware.py); the page asks for the key and sends it on its own API calls. The editor bundle
(editor.js) is built by playground/editor-src/build.sh and committed.
"""

import functools
import hashlib
import secrets
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# What the page is made of: nothing else is served, so a path can never reach another file.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "editor.js": "text/javascript; charset=utf-8",
}
PAGE_PATHS = frozenset({"/playground", *(f"/playground/{name}" for name in ASSETS if name != "index.html")})

# Scripts and styles from the service only, no inline script, API calls to the service only. The page's
# <style> elements that the editor adds carry a nonce new with each page (`{nonce}`).
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; connect-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def asset(name: str) -> tuple[bytes, str]:
    """An asset's bytes and its ETag, read once."""
    data = resources.files("entrypoints.http").joinpath("playground", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _answer(request: Request, name: str) -> Response:
    data, etag = asset(name)
    headers = {
        "content-security-policy": "default-src 'none'; frame-ancestors 'none'",  # a script or style file
        "x-content-type-options": "nosniff",
        "cache-control": "no-cache",  # revalidated each time: a new release shows at once
        "etag": etag,
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, headers={**headers, "content-type": ASSETS[name]})


async def playground_page(request: Request) -> Response:
    nonce = secrets.token_urlsafe(18)
    page = asset("index.html")[0].replace(b"{{nonce}}", nonce.encode())
    headers = {
        "content-security-policy": POLICY.format(nonce=nonce),
        "x-content-type-options": "nosniff",
        "cache-control": "no-store",  # the nonce is new with each page
    }
    return Response(page, headers={**headers, "content-type": ASSETS["index.html"]})


async def playground_asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in ASSETS or name == "index.html":
        raise HTTPException(404)  # answered in the service's error shape by app.py's handler
    return _answer(request, name)


ROUTES = [
    Route("/playground", playground_page, methods=["GET"]),
    Route("/playground/{asset}", playground_asset, methods=["GET"]),
]
