"""Which of the whitelisted Python packages work as Python functions of the service, at its default settings.

    .venv/bin/python bench/popular_python.py [--only numpy,pandas] [--json out.json] [--control]

The packages are the default PYTHON_PACKAGES_WHITELIST_IMPORT (numpy, pandas, tabulate, dateparser, urllib3,
requests, pptx, docx). The service's kernels import them from the Python that runs the service (this venv):
a package missing there fails with an ImportError, and the table says it is not installed
(`.venv/bin/pip install pandas tabulate dateparser python-pptx python-docx` brings the missing ones).

Starts a real service (`functions serve`, LOG_LEVEL=error, every other setting at its default, storage in a
new temporary folder), saves one workspace per package whose function really uses it (no network: urllib3
and requests only build requests) and checks what it returns. Outcomes as bench/popular_npm.py's: `works`,
`save`, `run`, `wrong`, `error`. `--control` also runs the same bodies under this Python without the
service, to tell a wrong expectation of this file from a limit of the service. The service is stopped and
the temporary folder removed at the end, also on errors, Ctrl-C and SIGTERM. Exit status: 0 when every
package was tried (whatever the count), 1 when the harness could not run, 2 on usage.
"""

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from popular_npm import (
    Attempt,
    Service,
    checkout,
    error_text,
    header,
    in_parallel,
    judged,
    parse_only,
    running_service,
    scratch_folder,
    short,
    stop_on_sigterm,
)


@dataclass(frozen=True)
class Case:
    """One package: `module` is what the code imports, `distribution` what pip installs."""

    module: str
    distribution: str
    body: str
    expected: Any


NUMPY = """
import numpy as np
matrix = np.arange(6).reshape(2, 3)
determinant = round(float(np.linalg.det(np.array([[1.0, 2.0], [3.0, 4.0]]))), 6)
return [int(matrix.sum()), matrix.T.shape, determinant, np.linspace(0, 1, 3)]
"""
PANDAS = """
import pandas as pd
frame = pd.DataFrame({"city": ["a", "b", "a"], "n": [1, 2, 3]})
return [frame.groupby("city")["n"].sum().to_dict(), frame.to_csv(index=False), frame["n"].mean()]
"""
TABULATE = """
from tabulate import tabulate
return tabulate([["a", 1], ["b", 22]], headers=["k", "v"], tablefmt="github")
"""
DATEPARSER = """
import datetime
import dateparser
base = datetime.datetime(2024, 1, 15, 12, 0)
return [
    dateparser.parse("15 January 2024 10:30").isoformat(),
    dateparser.parse("2 days ago", settings={"RELATIVE_BASE": base}).isoformat(),
    dateparser.parse("le 3 mars 2024", languages=["fr"]).date().isoformat(),
]
"""
URLLIB3 = """
import urllib3
from urllib3.util import parse_url
url = parse_url("https://user@example.com:8443/p/a?q=1#f")
body, content_type = urllib3.encode_multipart_formdata({"a": "1"}, boundary="b")
pool = urllib3.PoolManager(num_pools=2, retries=urllib3.util.Retry(total=3))
retries = pool.connection_pool_kw["retries"].total
return [url.host, url.port, url.path, url.query, url.fragment, body.decode(), content_type, retries]
"""
REQUESTS = """
import requests
call = requests.Request("POST", "https://example.com/api", params={"q": "x y"}, json={"a": 1})
prepared = requests.Session().prepare_request(call)
kind, redirects = prepared.headers["Content-Type"], requests.Session().max_redirects
return [prepared.method, prepared.url, kind, prepared.body.decode(), requests.codes.ok, redirects]
"""
PPTX = """
import io
from pptx import Presentation
deck = Presentation()
slide = deck.slides.add_slide(deck.slide_layouts[0])
slide.shapes.title.text = "Hello"
slide.placeholders[1].text = "from a function"
saved = io.BytesIO()
deck.save(saved)
again = Presentation(io.BytesIO(saved.getvalue()))
return [len(again.slides), again.slides[0].shapes.title.text, saved.getvalue()[:2].decode()]
"""
DOCX = """
import io
import docx
document = docx.Document()
document.add_heading("Title", 1)
document.add_paragraph("Hello")
document.add_table(rows=1, cols=2).cell(0, 1).text = "cell"
saved = io.BytesIO()
document.save(saved)
again = docx.Document(io.BytesIO(saved.getvalue()))
return [[paragraph.text for paragraph in again.paragraphs], again.tables[0].cell(0, 1).text]
"""
MULTIPART = '--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--b--\r\n'

CASES: tuple[Case, ...] = (
    Case("numpy", "numpy", NUMPY, [15, [3, 2], -2.0, [0.0, 0.5, 1.0]]),
    Case("pandas", "pandas", PANDAS, [{"a": 4, "b": 2}, "city,n\na,1\nb,2\na,3\n", 2.0]),
    Case("tabulate", "tabulate", TABULATE, "| k   |   v |\n|-----|-----|\n| a   |   1 |\n| b   |  22 |"),
    Case(
        "dateparser", "dateparser", DATEPARSER, ["2024-01-15T10:30:00", "2024-01-13T12:00:00", "2024-03-03"]
    ),
    Case(
        "urllib3",
        "urllib3",
        URLLIB3,
        ["example.com", 8443, "/p/a", "q=1", "f", MULTIPART, "multipart/form-data; boundary=b", 3],
    ),
    Case(
        "requests",
        "requests",
        REQUESTS,
        ["POST", "https://example.com/api?q=x+y", "application/json", '{"a": 1}', 200, 30],
    ),
    Case("pptx", "python-pptx", PPTX, [1, "Hello", "PK"]),
    Case("docx", "python-docx", DOCX, [["Title", "Hello"], "cell"]),
)


@dataclass
class Report:
    module: str
    distribution: str
    version: str = "not installed"  # in the Python that runs the service
    attempt: Attempt = field(default_factory=lambda: Attempt("error", "not tried"))
    control: Attempt | None = None  # the same body under this Python, with --control

    @property
    def works(self) -> bool:
        return self.attempt.status == "works"


def installed_version(case: Case) -> str:
    try:
        version = importlib.metadata.version(case.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    return version if importlib.util.find_spec(case.module) else f"{version} (no module {case.module})"


def try_case(service: Service, case: Case, report: Report) -> None:
    workspace = f"py-{case.module}"
    body = {"functions": {"use": {"code": case.body.strip() + "\n", "language": "python"}}}
    started = time.perf_counter()
    status, answer = service.call("POST", f"/v2/functions/{workspace}", body, 120)
    save_ms = round((time.perf_counter() - started) * 1000, 1)
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        text = error_text(error) if error is not None else f"HTTP {status}: {short(str(answer), 500)}"
        report.attempt = Attempt("save" if error is not None else "error", text, save_ms=save_ms, error=error)
        return
    started = time.perf_counter()
    status, answer = service.call("POST", f"/v2/functions/{workspace}/run/use", {}, 90)
    run_ms = round((time.perf_counter() - started) * 1000, 1)
    report.attempt = judged(status, answer, case.expected, run_ms, save_ms)
    if report.attempt.status == "run" and isinstance(report.attempt.error, dict):
        stack = report.attempt.error.get("stack")
        if isinstance(stack, str) and stack.strip():  # the last frames say where inside the package
            report.attempt.message += " | " + " / ".join(stack.strip().splitlines()[-3:])
    service.call("DELETE", f"/v2/functions/{workspace}", None, 60)


CONTROL = """
import json

def use():
{body}

def plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)

print(json.dumps({{"result": use()}}, default=plain))
"""


def control(case: Case, report: Report) -> None:
    """The body as a plain function of this Python (no sandbox), in a process of its own."""
    script = CONTROL.format(body=textwrap.indent(case.body.strip(), "    "))
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        lines = done.stdout.strip().splitlines()
        if lines:
            answer = json.loads(lines[-1])
        else:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            answer = {"error": {"type": "FunctionError", "message": last}}
    except (subprocess.TimeoutExpired, ValueError) as failed:
        answer = {"error": {"type": type(failed).__name__, "message": str(failed)}}
    run_ms = round((time.perf_counter() - started) * 1000, 1)
    report.control = judged(200 if "result" in answer else 422, answer, case.expected, run_ms, 0)


MARK = {"works": "ok", "save": "SAVE", "run": "RUN", "wrong": "WRONG", "error": "ERROR"}


def table(reports: Sequence[Report], with_control: bool) -> str:
    rows = [["#", "module", "distribution", "version", "result", "save ms", "run ms"]]
    if with_control:
        rows[0].append("plain python")
    rows[0].append("why")
    for number, report in enumerate(reports, 1):
        attempt = report.attempt
        row = [str(number), report.module, report.distribution, report.version]
        row += [MARK.get(attempt.status, "?"), f"{attempt.save_ms or 0:.0f}", f"{attempt.run_ms or 0:.0f}"]
        if with_control:
            row.append(MARK.get(report.control.status, "?") if report.control else "-")
        row.append(short(attempt.message, 200))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", help="comma-separated module names (default: all 8)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--parallel", type=int, default=3, help="saves and runs at once (default 3)")
    parser.add_argument("--control", action="store_true", help="also run the same code under this Python")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    arguments = parser.parse_args(argv)
    try:
        names = parse_only(arguments.only, [case.module for case in CASES])
    except SystemExit as refused:
        print(refused, file=sys.stderr)
        return 2
    cases = [case for case in CASES if case.module in names]
    reports = {case.module: Report(case.module, case.distribution, installed_version(case)) for case in cases}
    stop_on_sigterm()
    facts: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable, **checkout()}
    print(header(f"whitelisted Python packages as functions: {len(cases)} packages", facts), file=sys.stderr)
    started = time.monotonic()
    try:
        with scratch_folder("popular-python-", arguments.keep) as scratch:
            with running_service(scratch, {}) as service:

                def task(case: Case) -> Callable[[], None]:
                    def run() -> None:
                        try_case(service, case, reports[case.module])
                        attempt = reports[case.module].attempt
                        print(
                            f"{case.module}: {attempt.status} (save {attempt.save_ms or 0:.0f} ms,"
                            f" run {attempt.run_ms or 0:.0f} ms)",
                            file=sys.stderr,
                        )

                    return run

                in_parallel([task(case) for case in cases], arguments.parallel)
        if arguments.control:
            in_parallel([partial(control, case, reports[case.module]) for case in cases], arguments.parallel)
    except KeyboardInterrupt:
        print("interrupted: the service was stopped", file=sys.stderr)
        return 130
    except RuntimeError as failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    ordered = [reports[name] for name in names]
    print(table(ordered, arguments.control))
    print()
    trouble = [r for r in ordered if not r.works]
    if trouble:
        print("Failures, whole messages:")
        for report in trouble:
            print(f"- {report.module}: [{report.attempt.status}] {short(report.attempt.message, 2000)}")
        print()
    works = sum(report.works for report in ordered)
    print(f"{works} of {len(ordered)} work")
    print(f"({time.monotonic() - started:.0f} s)")
    if arguments.json:
        document = {
            **facts,
            "when": datetime.datetime.now(datetime.UTC).isoformat(),
            "total": len(ordered),
            "works": works,
            "packages": [{**asdict(report), "works": report.works} for report in ordered],
        }
        arguments.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {arguments.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
