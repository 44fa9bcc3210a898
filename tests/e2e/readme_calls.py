"""The two curl calls of the original README, character for character, and the bodies they send."""

import json
from typing import Any

# The two calls of the original README, character for character; only the port differs.
README_SAVE = """curl --location 'http://localhost:4000/v2/functions/test' \\
--header 'Content-Type: application/json' \\
--data '{
    "functions": {
        "hello": {
            "code": "return \\"Hello \\" + name;",
            "parameters": {
                "name": {
                    "type": "string"
                }
            }
        }
    }
}'"""
README_RUN = """curl --location 'http://localhost:4000/v2/functions/test/run/hello' \\
--header 'Content-Type: application/json' \\
--data '{
    "parameters": {
        "name": "world"
    }
}'"""


def body_of(command: str) -> str:
    """The body a call sends, as written."""
    return command.split("--data '", 1)[1].rstrip("'")


def data_of(command: str) -> Any:
    """The JSON value of that body."""
    return json.loads(body_of(command))
