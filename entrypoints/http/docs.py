"""The API description served by the app: /openapi.json and the /docs page that renders it."""

import functools
import json
from importlib import resources

from entrypoints.http.openapi import document


@functools.cache
def openapi_json() -> bytes:
    """The OpenAPI document, encoded once."""
    return json.dumps(document(), indent=2).encode()


@functools.cache
def docs_page() -> bytes:
    """A self-contained page (no CDN) that fetches openapi.json and renders it."""
    return resources.files("entrypoints.http").joinpath("docs.html").read_bytes()
