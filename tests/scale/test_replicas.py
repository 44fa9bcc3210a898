"""Three `functions serve` instances on one storage folder, behind nginx with deploy/nginx/functions.conf.

The tests run in file order on one cluster; the last one kills an instance.
"""

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from attrs import frozen

from tests.faults.service import Service
from tests.npm.registry import LocalRegistry, local_registry
from tests.scale.cluster import Nginx, instances, metric, workers

HAVE_NGINX = shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx")
pytestmark = [
    pytest.mark.node,
    # .ci/run installs nginx: in CI the suite must run.
    pytest.mark.skipif(not HAVE_NGINX and not os.environ.get("CI"), reason="nginx is not installed"),
]
# Counts up in the worker's cache; the id tells one worker from another.
COUNTER = {
    "functions": {
        "count": {
            "code": "cache.id ??= crypto.randomUUID(); cache.n = (cache.n || 0) + 1;\n"
            "return [cache.id, cache.n];"
        }
    }
}
REGENERATED = re.compile(r"regenerated the scripts of (\d+) workspaces \((\d+) were current already\)")
TIMEOUT = httpx.Timeout(30.0)


def versioned(version: int) -> dict[str, Any]:
    """Two functions that must agree: a half-saved workspace would not."""
    return {"functions": {"a": {"code": f"return {version};"}, "b": {"code": f"return {version} * 1000;"}}}


@frozen
class Cluster:
    instances: list[Service]
    nginx: Nginx

    def via_nginx(self) -> httpx.Client:
        return httpx.Client(base_url=self.nginx.url, timeout=TIMEOUT)


def save(url: str, workspace: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v2/functions/{workspace}", json=body, timeout=TIMEOUT)


def run(url: str, workspace: str, function: str) -> Any:
    answer = httpx.post(f"{url}/v2/functions/{workspace}/run/{function}", json={}, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def upstreams(nginx: Nginx, workspace: str, at_least: int = 1) -> list[str]:
    """The instance (host:port) that answered each request for `workspace`, in order. nginx writes a
    request's line after its answer has gone out, so this waits (a while) for `at_least` of them."""
    deadline = time.monotonic() + 10
    while True:
        # After a retry nginx lists every address it tried: the last one answered.
        found = [up.split(", ")[-1] for _, _, ws, up in nginx.access() if ws == workspace]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with local_registry() as started:
        started.publish(
            "leftpad", "1.0.0", {"index.js": "module.exports = (s, n) => String(s).padStart(n, '0');"}
        )
        yield started


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale") / "storage"


@pytest.fixture(scope="module")
def cluster(storage: Path, registry: LocalRegistry) -> Iterator[Cluster]:
    with instances(storage, NPM_CONFIG_REGISTRY=registry.url) as started:
        nginx = Nginx(storage.parent / "nginx", [service.port for service in started])
        try:
            nginx.wait_ready()
            yield Cluster(started, nginx)
        finally:
            nginx.stop()


def test_a_save_on_any_instance_is_what_every_instance_runs_next(cluster: Cluster) -> None:
    for version, saver in enumerate(cluster.instances, start=1):
        assert save(saver.url, "shared", versioned(version)).status_code == 200
        # Every instance has the previous version loaded by now: each must see the new one.
        assert [run(runner.url, "shared", "a") for runner in cluster.instances] == [version] * 3


def test_racing_saves_through_different_instances_leave_one_whole_version(
    cluster: Cluster, storage: Path
) -> None:
    targets = cluster.instances
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda k: save(targets[k % 3].url, "raced", versioned(k)), range(20)))
    assert [answer.status_code for answer in answers] == [200] * 20
    bodies = [httpx.get(f"{service.url}/v2/functions/raced", timeout=TIMEOUT).json() for service in targets]
    version = next(k for k in range(20) if versioned(k) == bodies[0])  # StopIteration: not a whole version
    assert bodies == [versioned(version)] * 3
    for service in targets:
        assert (run(service.url, "raced", "a"), run(service.url, "raced", "b")) == (version, version * 1000)
    assert not [name for name in os.listdir(storage / "raced") if name.startswith(".tmp-")]


def test_runs_of_a_workspace_through_nginx_land_on_one_instance(cluster: Cluster) -> None:
    with cluster.via_nginx() as client:
        assert client.post("/v2/functions/counter", json=COUNTER).status_code == 200
        results = [
            client.post("/v2/functions/counter/run/count", json={}).json()["result"] for _ in range(10)
        ]
        assert [n for _, n in results] == list(range(1, 11)) and len({worker for worker, _ in results}) == 1
        # The hash is by workspace: a dozen workspaces spread over the instances.
        for i in range(12):
            assert client.post(f"/v2/functions/spread-{i}", json=COUNTER).status_code == 200
            assert client.post(f"/v2/functions/spread-{i}/run/count", json={}).status_code == 200
    ports = {f"127.0.0.1:{service.port}" for service in cluster.instances}
    answered = upstreams(cluster.nginx, "counter", at_least=11)
    assert len(answered) == 11 and len(set(answered)) == 1 and answered[0] in ports  # the save and 10 runs
    spread = {up for i in range(12) for up in upstreams(cluster.nginx, f"spread-{i}")}
    assert len(spread) >= 2 and spread <= ports


def test_a_save_installs_its_packages_once_whichever_instances_save_it(cluster: Cluster) -> None:
    body = {
        "functions": {"f": {"code": "return require('leftpad')(3, 3);"}},
        "dependencies": {"leftpad": "1.0.0"},
    }
    for (
        service
    ) in cluster.instances:  # the same body through each: the first installs, the others find it there
        assert save(service.url, "padded", body).status_code == 200
    installs = [
        metric(s, "functions_dependency_installs_total", 'outcome="installed"') for s in cluster.instances
    ]
    unchanged = [
        metric(s, "functions_dependency_installs_total", 'outcome="unchanged"') for s in cluster.instances
    ]
    assert (sum(installs), sum(unchanged)) == (1, 2)
    assert [run(service.url, "padded", "f") for service in cluster.instances] == ["003"] * 3


def test_deleting_through_one_instance_stops_its_worker_on_every_instance(cluster: Cluster) -> None:
    assert save(cluster.instances[0].url, "doomed", versioned(1)).status_code == 200
    for service in cluster.instances:
        assert run(service.url, "doomed", "a") == 1
    before = [workers(service) for service in cluster.instances]
    assert httpx.delete(f"{cluster.instances[1].url}/v2/functions/doomed", timeout=TIMEOUT).status_code == 204
    for service in cluster.instances:
        answer = httpx.post(f"{service.url}/v2/functions/doomed/run/a", json={}, timeout=TIMEOUT)
        assert (answer.status_code, answer.json()["error"]["type"]) == (404, "NotFound")
    # The run that met the 404 evicted the worker: nothing waits for the idle timeout (an hour).
    assert [workers(service) for service in cluster.instances] == [count - 1 for count in before]


def test_instances_starting_together_regenerate_each_workspace_once(
    cluster: Cluster, storage: Path, registry: LocalRegistry
) -> None:
    stored = httpx.get(f"{cluster.instances[0].url}/v2/functions", timeout=TIMEOUT).json()["workspaces"]
    assert len(stored) >= 15
    with instances(storage, UPDATE_SCRIPTS_ON_STARTUP="yes", NPM_CONFIG_REGISTRY=registry.url) as fresh:
        counts = [REGENERATED.findall(service.log_text()) for service in fresh]
        installs = [metric(s, "functions_dependency_installs_total", 'outcome="installed"') for s in fresh]
        assert [run(service.url, "padded", "f") for service in fresh] == ["003"] * 3
    assert all(len(found) == 1 for found in counts), counts
    done = [int(found[0][0]) for found in counts]
    current = [int(found[0][1]) for found in counts]
    assert sum(done) == len(stored), counts  # each workspace once, by whichever instance got its lock first
    assert [d + c for d, c in zip(done, current, strict=True)] == [len(stored)] * 3
    assert installs == [0, 0, 0]  # "padded"'s packages were in place: regenerating it ran no npm
    assert all((storage / workspace / ".made-from").is_file() for workspace in stored)


@frozen
class Attempt:
    started: float
    ended: float
    status: int  # 0: no answer at all
    result: Any = None


def test_killing_an_instance_moves_its_workspaces_within_a_second(cluster: Cluster) -> None:
    nginx = cluster.nginx
    with cluster.via_nginx() as client:
        assert client.post("/v2/functions/moving", json=COUNTER).status_code == 200
        first = [client.post("/v2/functions/moving/run/count", json={}).json()["result"] for _ in range(3)]
        victim_address = upstreams(nginx, "moving", at_least=4)[-1]
        victim = next(s for s in cluster.instances if f"127.0.0.1:{s.port}" == victim_address)
        for i in range(60):  # a workspace whose saves also go to the victim
            kept = f"kept-{i}"
            assert client.post(f"/v2/functions/{kept}", json=versioned(0)).status_code == 200
            if upstreams(nginx, kept)[-1] == victim_address:
                break
    assert upstreams(nginx, kept)[-1] == victim_address
    old_worker = first[0][0]

    stop = threading.Event()
    runs: list[Attempt] = []
    acked: list[int] = []
    attempted: list[int] = []

    def load() -> None:
        with cluster.via_nginx() as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.post("/v2/functions/moving/run/count", json={})
                    status, result = answer.status_code, answer.json().get("result")
                except (httpx.HTTPError, ValueError):
                    status, result = 0, None
                runs.append(Attempt(started, time.monotonic(), status, result))

    def saves() -> None:
        with cluster.via_nginx() as client:
            version = 0
            while not stop.is_set():
                version += 1
                attempted.append(version)
                try:
                    if client.post(f"/v2/functions/{kept}", json=versioned(version)).status_code == 200:
                        acked.append(version)
                except httpx.HTTPError:
                    pass

    threads = [threading.Thread(target=work) for work in (load, load, saves)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        killed = time.monotonic()
        victim.kill()  # SIGKILL, then its hosts
        dead = time.monotonic()
        time.sleep(2.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    failed = [attempt for attempt in runs if attempt.status != 200]
    # Only runs in flight when the instance died fail (a POST already sent is never sent twice).
    assert all(attempt.started < dead + 0.2 for attempt in failed), (killed, dead, failed)
    assert len(failed) <= 2
    after = [attempt for attempt in runs if attempt.status == 200 and attempt.result[0] != old_worker]
    assert after and after[0].ended - dead < 1.0, (dead, after[:3])
    assert all(attempt.status == 200 for attempt in runs if attempt.started > dead + 1.0)
    # One new worker took the workspace over, cold: its count starts at 1 and every run counted once.
    assert {attempt.result[0] for attempt in after} == {after[0].result[0]}
    assert sorted(attempt.result[1] for attempt in after) == list(range(1, len(after) + 1))
    assert all(
        attempt.started < dead + 0.2 for attempt in runs if attempt.result and attempt.result[0] == old_worker
    )

    survivors = [service for service in cluster.instances if service is not victim]
    moved_to = {up for up in upstreams(nginx, "moving", at_least=len(after))[-len(after) :]}
    assert len(moved_to) == 1 and moved_to < {f"127.0.0.1:{s.port}" for s in survivors}
    # No lost save: every survivor has the last acknowledged version, or a later one whose answer was lost.
    assert acked and acked[-1] > 1
    bodies = [httpx.get(f"{s.url}/v2/functions/{kept}", timeout=TIMEOUT).json() for s in survivors]
    final = next(k for k in attempted if versioned(k) == bodies[0])
    assert bodies[1] == bodies[0] and acked[-1] <= final <= attempted[-1]
