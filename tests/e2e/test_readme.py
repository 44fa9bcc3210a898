"""The README's examples run as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.node
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def expected_output(code: str) -> list[str]:
    """What the block says it prints: the comment after each `print(...)`."""
    return re.findall(r"^\s*print\(.*\)  # (.*)$", code, re.M)


def test_the_readme_has_an_embedding_example() -> None:
    assert BLOCKS and "open_service" in BLOCKS[0]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_python_example_prints_what_its_comments_say(tmp_path: Path, code: str) -> None:
    runnable = code.replace("/tmp/fns", str(tmp_path / "fns"))
    answer = subprocess.run(
        [sys.executable, "-c", runnable], capture_output=True, text=True, timeout=60, check=True
    )
    assert expected_output(code)
    assert answer.stdout.splitlines() == expected_output(code)
