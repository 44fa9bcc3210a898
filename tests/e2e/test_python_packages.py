"""The whitelisted Python packages, really installed, really used in functions.

At default settings, through a real `functions serve` (its walls included): each package of
PYTHON_PACKAGES_WHITELIST_IMPORT imported and used, jsonschema with the whitelist extended. Against the
runtime itself: which kernel a workspace gets (packages that need compiled extension modules, their
own or a dependency's, run in the main interpreter of a kernel of their own), decided at save; a run
that meets an extension refusing its subinterpreter moves there and runs again.
"""

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from adapters.python.runtime import PythonRuntime
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.model import Language, Status
from entrypoints.settings import PYTHON_PACKAGES
from tests.e2e.kernel_packages import installed_for, newest_subinterpreter_python
from tests.e2e.serving import serving
from tests.python.kernels import python_runtime

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

# package -> (a function body that really uses it, its result)
USES: dict[str, tuple[str, Any]] = {
    "numpy": ("import numpy as np\nreturn (np.arange(6).reshape(2, 3) * 2).sum(axis=0)", [6, 10, 14]),
    "pandas": (
        "import pandas as pd\n"
        "df = pd.DataFrame({'team': ['a', 'b', 'a', 'b', 'c'], 'score': [1, 2, 3, 4, 5]})\n"
        "totals = df.groupby('team')['score'].agg(['sum', 'mean'])\n"
        "return {team: [int(row['sum']), float(row['mean'])] for team, row in totals.iterrows()}",
        {"a": [4, 2.0], "b": [6, 3.0], "c": [5, 5.0]},
    ),
    "tabulate": (
        "from tabulate import tabulate\nreturn tabulate([['x', 1], ['y', 22]], headers=['k', 'v'])",
        "k      v\n---  ---\nx      1\ny     22",
    ),
    "dateparser": (
        "import dateparser\n"
        "return dateparser.parse('2 March 2021 14:05', settings={'DATE_ORDER': 'DMY'}).isoformat()",
        "2021-03-02T14:05:00",
    ),
    "urllib3": (
        "import urllib3\nurl = urllib3.util.parse_url('https://example.org:8443/a?b=1')\n"
        "return [url.host, url.port, url.request_uri]",
        ["example.org", 8443, "/a?b=1"],
    ),
    "requests": (
        "import requests\n"
        "r = requests.Request('POST', 'https://example.org/api', params={'q': 'a b'}, json={'x': 1})\n"
        "p = r.prepare()\nreturn [p.url, p.headers['Content-Type'], p.body.decode()]",
        ["https://example.org/api?q=a+b", "application/json", '{"x": 1}'],
    ),
    "docx": (
        "import io, docx\nd = docx.Document()\nd.add_heading('Report', 0)\nd.add_paragraph('hello')\n"
        "out = io.BytesIO()\nd.save(out)\nback = docx.Document(io.BytesIO(out.getvalue()))\n"
        "return [p.text for p in back.paragraphs]",
        ["Report", "hello"],
    ),
    "pptx": (
        "import io, pptx\np = pptx.Presentation()\nslide = p.slides.add_slide(p.slide_layouts[0])\n"
        "slide.shapes.title.text = 'Hi'\nout = io.BytesIO()\np.save(out)\n"
        "back = pptx.Presentation(io.BytesIO(out.getvalue()))\n"
        "return [s.shapes.title.text for s in back.slides]",
        ["Hi"],
    ),
}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
JSONSCHEMA = (
    "import jsonschema\n"
    f"schema = {SCHEMA!r}\n"
    "jsonschema.validate({'n': 1}, schema)\n"
    "try:\n    jsonschema.validate(value, schema)\n"
    "except jsonschema.ValidationError as error:\n    return error.message\n"
    "return 'valid'"
)
# Packages with compiled extension modules, their own or a dependency's (python-docx and python-pptx:
# lxml; requests: charset-normalizer; dateparser: regex).
COMPILED = {"numpy", "pandas", "dateparser", "requests", "docx", "pptx"}
# The kernel tests below need subinterpreters (3.12+), with packages that Python's own pip installed.
KERNEL_REQUIREMENTS = ["python-docx", "python-pptx", "requests", "tabulate", "urllib3"]
# The service venv's packages (the [test] extras), seen only by kernels on the service's own Python.
OWN_PYTHON = {"PYTHON_KERNEL_BINARY": sys.executable}


def test_every_default_package_has_a_use() -> None:
    assert set(USES) == set(PYTHON_PACKAGES)


class Service:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60.0)

    def save(self, workspace: str, code: str, **parameters: str) -> None:
        function: dict[str, Any] = {"language": "python", "code": code}
        if parameters:
            function["parameters"] = {name: {"type": kind} for name, kind in parameters.items()}
        answer = self.http.post(f"/v2/functions/{workspace}", json={"functions": {"f": function}})
        assert answer.status_code == 200, answer.text

    def run(self, workspace: str, **parameters: Any) -> httpx.Response:
        return self.http.post(f"/v2/functions/{workspace}/run/f", json={"parameters": parameters})

    def result(self, workspace: str, **parameters: Any) -> Any:
        answer = self.run(workspace, **parameters)
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with serving(tmp_path_factory.mktemp("packages"), KERNEL_POOL_SIZE="2", **OWN_PYTHON) as url:
        client = Service(url)
        yield client
        client.http.close()


@pytest.mark.parametrize("package", USES)
def test_each_whitelisted_package_works_at_default_settings(service: Service, package: str) -> None:
    code, expected = USES[package]
    service.save(f"uses-{package}", code)
    assert service.result(f"uses-{package}") == expected
    assert service.result(f"uses-{package}") == expected  # warm
    service.http.delete(f"/v2/functions/uses-{package}")  # its kernel goes


def test_a_second_save_of_a_pandas_workspace_runs_the_new_code(service: Service) -> None:
    code = USES["pandas"][0]
    service.save("pandas-twice", code)
    assert service.result("pandas-twice") == USES["pandas"][1]
    service.save("pandas-twice", code.replace("'mean'", "'max'"))
    assert service.result("pandas-twice") == {"a": [4, 3.0], "b": [6, 4.0], "c": [5, 5.0]}
    service.http.delete("/v2/functions/pandas-twice")


def test_user_code_gets_no_ctypes_from_pandas_or_numpy(service: Service) -> None:
    """pandas imports ctypes: what it gets is a stand-in. User code's own import is refused, and so is
    every route found to the real module or to memory through the packages."""
    stand_in = "ctypes is not available in functions"
    attempts = {
        "import ctypes": ("import pandas\nimport ctypes", "ImportError", "not supported"),
        "through pandas": (
            "import pandas.errors\nreturn str(pandas.errors.ctypes)",
            "AttributeError",
            "does not hand out module 'ctypes'",
        ),
        "by name": (
            "import pandas\nfrom pandas.compat._optional import import_optional_dependency\n"
            "return str(import_optional_dependency('ctypes'))",
            "ImportError",
            "ctypes",
        ),
        "numpy ctypeslib": (
            "import pandas, numpy as np\n"
            "return np.ctypeslib.ndpointer(dtype='u1', shape=(8,))(4096).contents.tolist()",
            "AttributeError",
            stand_in,
        ),
        "array ctypes": (
            "import pandas, numpy as np\nreturn str(np.zeros(2).ctypes)",
            "AttributeError",
            stand_in,
        ),
        "a pickle": (
            "import io, pandas as pd\n"
            "return pd.read_pickle(io.BytesIO(b\"cbuiltins\\neval\\n(S'1+1'\\ntR.\"))",
            "UnpicklingRefused",
            "unpickling builtins.eval is not allowed",
        ),
    }
    for name, (code, error_name, fragment) in attempts.items():
        service.save("no-ctypes", code)
        answer = service.run("no-ctypes")
        assert answer.status_code == 422, (name, answer.text)
        error = answer.json()["error"]
        assert (error["type"], error["name"]) == ("FunctionError", error_name), (name, error)
        assert fragment in error["message"], (name, error)
    service.http.delete("/v2/functions/no-ctypes")


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    whitelist = ",".join((*PYTHON_PACKAGES, "jsonschema"))
    storage = tmp_path_factory.mktemp("jsonschema")
    with serving(
        storage, KERNEL_POOL_SIZE="1", PYTHON_PACKAGES_WHITELIST_IMPORT=whitelist, **OWN_PYTHON
    ) as url:
        client = Service(url)
        yield client
        client.http.close()


def test_jsonschema_validates_with_the_whitelist_extended(extended: Service) -> None:
    """jsonschema needs rpds (PyO3), which loads in one interpreter per process: two workspaces using it
    on a pool of one kernel both work, and so does a second save."""
    for workspace in ("schema-a", "schema-b"):
        extended.save(workspace, JSONSCHEMA, value="object")
        assert extended.result(workspace, value={"n": 2}) == "valid"
        assert extended.result(workspace, value={"n": "x"}) == "'x' is not of type 'integer'"
    extended.save("schema-a", JSONSCHEMA.replace("'valid'", "'fine'"), value="object")
    assert extended.result("schema-a", value={"n": 3}) == "fine"


# -- the kernel each workspace gets ------------------------------------------------------------------


@pytest.fixture
async def python(pytestconfig: pytest.Config) -> AsyncIterator[PythonRuntime]:
    packages = await installed_for(pytestconfig, newest_subinterpreter_python(), KERNEL_REQUIREMENTS)
    runtime = python_runtime(timeout_ms=20000, pool_size=1, packages_dir=packages)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.fixture
def workspaces(python: PythonRuntime) -> Workspaces:
    return Workspaces(InMemoryStore(), {Language.PYTHON: python})


async def save(workspaces: Workspaces, workspace: str, code: str) -> None:
    body = {"functions": {"f": {"language": "python", "code": code}}}
    await workspaces.save(workspace_from_body(workspace, body))


async def result(workspaces: Workspaces, workspace: str) -> Any:
    outcome = await workspaces.run(workspace, "f")
    assert outcome.status is Status.SUCCEEDED, outcome.error
    return outcome.result


@pytest.mark.anyio
async def test_the_kernel_is_chosen_at_save_from_the_installed_distributions(
    workspaces: Workspaces, python: PythonRuntime
) -> None:
    for package in ("docx", "tabulate", "requests", "urllib3"):
        await save(workspaces, package, USES[package][0])
    # decided at save: the answer of the kernel's look at the distributions, kept per module
    assert python._compiled == {
        "docx": "lxml",
        "tabulate": None,
        "requests": "charset-normalizer",
        "urllib3": None,
    }
    for package in ("docx", "tabulate", "requests", "urllib3"):
        assert await result(workspaces, package) == USES[package][1]
        own_kernel = python.kernel_of(package) not in python.kernel_pids
        assert own_kernel is (package in COMPILED), package


@pytest.mark.anyio
async def test_two_lxml_workspaces_on_a_pool_of_one_kernel_both_work(
    workspaces: Workspaces, python: PythonRuntime
) -> None:
    """Before: the second one met "Interpreter change detected" (lxml loads in one interpreter per
    process), and so did a second save of the first."""
    await save(workspaces, "plain", "return 'plain'")
    for round_ in range(2):
        for workspace, package in (("word", "docx"), ("slides", "pptx"), ("word-2", "docx")):
            if round_ == 1 and workspace == "word":
                await save(workspaces, workspace, USES[package][0])  # a second save
            elif round_ == 0:
                await save(workspaces, workspace, USES[package][0])
            assert await result(workspaces, workspace) == USES[package][1]
        assert await result(workspaces, "plain") == "plain"
    kernels = {python.kernel_of(w) for w in ("word", "slides", "word-2")}
    assert len(kernels) == 3 and not kernels & set(python.kernel_pids)
    assert python.kernel_of("plain") in python.kernel_pids


@pytest.mark.anyio
async def test_a_run_that_meets_a_refusing_extension_moves_to_a_kernel_of_its_own(
    workspaces: Workspaces, python: PythonRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """As if the look at the distributions had missed lxml: the first workspace loads it in its
    subinterpreter, the second one's import fails ("does not support loading in subinterpreters", or
    "Interpreter change detected"), and that run is done again in a main interpreter."""
    caplog.set_level(logging.INFO, logger="functions.python")
    python._compiled["docx"] = None
    for workspace in ("first", "second"):
        await save(workspaces, workspace, USES["docx"][0])
        assert await result(workspaces, workspace) == USES["docx"][1]
    assert python.kernel_of("second") not in python.kernel_pids
    assert "'second' moves to a kernel of its own" in caplog.text
    assert await result(workspaces, "second") == USES["docx"][1]  # and stays there
