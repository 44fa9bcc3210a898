"""What a JavaScript run leaves behind stops when it answers: no user code runs outside a run.

A timer, an interval or an immediate set during a run is cleared when that run answers, succeeded or
failed, so nothing of it runs after its answer, outside its timeout. Runs in flight together keep each
their own timers.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.security.conftest import Tenant

pytestmark = pytest.mark.node

SLEEP = "const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));"


def result(answer: httpx.Response) -> object:
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def peek_later(tenant: Tenant, workspace: str, seconds: float = 0.3) -> object:
    time.sleep(seconds)
    return result(tenant.run(workspace, "peek"))


def test_an_interval_stops_when_its_run_answers(tenant: Tenant) -> None:
    arm = f"{SLEEP} cache.n = 0; setInterval(() => {{ cache.n += 1 }}, 2); await sleep(40); return cache.n"
    assert tenant.save("interval", {"arm": arm, "peek": "return cache.n"}).status_code == 200
    counted = result(tenant.run("interval", "arm"))
    assert isinstance(counted, int) and counted > 0
    assert peek_later(tenant, "interval") == counted
    assert peek_later(tenant, "interval") == counted  # and it stays stopped
    tenant.survived()


def test_a_timeout_set_for_after_the_answer_never_runs(tenant: Tenant) -> None:
    arm = "setTimeout(() => { cache.late = 'ran' }, 50); return 'answered'"
    assert tenant.save("late", {"arm": arm, "peek": "return cache.late ?? 'never'"}).status_code == 200
    assert result(tenant.run("late", "arm")) == "answered"
    assert peek_later(tenant, "late") == "never"
    tenant.survived()


def test_timers_of_a_failed_run_stop_too(tenant: Tenant) -> None:
    arm = (
        "cache.n = 0; setInterval(() => { cache.n += 1 }, 1); setTimeout(() => { cache.late = 1 }, 30);"
        " throw new Error('failed on purpose')"
    )
    peek = "return [cache.n, cache.late ?? 'never']"
    assert tenant.save("failed", {"arm": arm, "peek": peek}).status_code == 200
    answer = tenant.run("failed", "arm")
    assert answer.status_code == 422 and "failed on purpose" in answer.text, answer.text
    first = peek_later(tenant, "failed", 0.1)
    assert isinstance(first, list) and first[1] == "never"
    assert peek_later(tenant, "failed") == first
    tenant.survived()


def test_an_endless_chain_of_immediates_ends_with_its_run(tenant: Tenant) -> None:
    arm = "cache.i = 0; const again = () => { cache.i += 1; setImmediate(again) }; again(); return 'answered'"
    assert tenant.save("immediates", {"arm": arm, "peek": "return cache.i"}).status_code == 200
    assert result(tenant.run("immediates", "arm")) == "answered"
    assert peek_later(tenant, "immediates", 0.1) == peek_later(tenant, "immediates")
    tenant.survived()


@pytest.mark.parametrize(
    "arm",
    [
        # a timeout re-armed after it fired is not in its run's list any more
        "const t = setTimeout(() => { cache.r = (cache.r || 0) + 1 }, 1); await sleep(20); t.refresh();",
        # an interval kept in `cache`, where the next run could find it: still its own run's
        "cache.t = setInterval(() => { cache.r = (cache.r || 0) + 1 }, 5); await sleep(20);",
        # util.promisify(setTimeout): a timer like any other
        "require('util').promisify(setTimeout)(40).then(() => { cache.r = 'promisified' });",
        # a callback that sets a timer again when it fires
        "const tick = () => { cache.r = (cache.r || 0) + 1; setTimeout(tick, 1) };"
        " setTimeout(tick, 1); await sleep(20);",
        # the `timers` builtin (a default one) hands out the same tracked timers
        "require('timers').setInterval(() => { cache.r = (cache.r || 0) + 1 }, 2); await sleep(20);",
        "require('timers/promises').setTimeout(40).then(() => { cache.r = 'timers/promises' });",
        "(await import('node:timers')).setTimeout(() => { cache.r = 'imported' }, 40);",
    ],
    ids=[
        "refresh",
        "interval in cache",
        "promisified",
        "self-renewing",
        "timers builtin",
        "timers/promises",
        "imported timers",
    ],
)
def test_no_timer_route_outlives_its_run(tenant: Tenant, arm: str) -> None:
    code = f"{SLEEP} cache.r = undefined; {arm} return cache.r ?? null"
    assert tenant.save("routes", {"arm": code, "peek": "return cache.r ?? null"}).status_code == 200
    counted = result(tenant.run("routes", "arm"))
    assert peek_later(tenant, "routes") == counted
    tenant.survived()


def test_runs_in_flight_together_keep_their_own_timers(tenant: Tenant) -> None:
    # `slow` starts first (alone in its worker), `quick` overlaps it and answers first: clearing the
    # timers of `quick` must leave those of `slow` (its interval and its sleeps), and the other way round.
    slow = (
        f"{SLEEP} cache.quickDone = false; let ticks = 0; const t = setInterval(() => {{ ticks += 1 }}, 5);"
        " while (!cache.quickDone) await sleep(5); const before = ticks; await sleep(100); clearInterval(t);"
        " setTimeout(() => { cache.slowLate = 1 }, 100); return ticks - before"
    )
    quick = (
        f"{SLEEP} let fired = false; setTimeout(() => {{ fired = true }}, 20); await sleep(60);"
        " setInterval(() => { cache.quickLate = (cache.quickLate || 0) + 1 }, 5); cache.quickDone = true;"
        " return fired"
    )
    peek = "return [cache.slowLate ?? 'never', cache.quickLate ?? 0]"
    assert tenant.save("overlap", {"slow": slow, "quick": quick, "peek": peek}).status_code == 200
    with ThreadPoolExecutor(2) as pool:
        slow_answer = pool.submit(tenant.run, "overlap", "slow")
        time.sleep(0.05)
        quick_answer = pool.submit(tenant.run, "overlap", "quick")
        assert result(quick_answer.result()) is True
        ticks = result(slow_answer.result())
    assert isinstance(ticks, int) and ticks > 3  # its interval went on after `quick` answered
    assert peek_later(tenant, "overlap") == ["never", 0]
    tenant.survived()


def test_logs_of_overlapping_runs_stay_apart_and_leftover_timers_log_nowhere(tenant: Tenant) -> None:
    code = (
        f"{SLEEP} for (let i = 0; i < 4; i++) {{ console.log(tag + i); await sleep(10) }}"
        " setInterval(() => console.log('stray ' + tag), 1); return tag"
    )
    spec = {"code": code, "parameters": {"tag": {"type": "string"}}}
    assert tenant.save("logs", {"f": spec}).status_code == 200
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda tag: tenant.run("logs", "f", {"tag": tag}), "abc"))
    for tag, answer in zip("abc", answers, strict=True):
        assert result(answer) == tag
        assert [entry["message"] for entry in answer.json()["logs"]] == [f"{tag}{i}" for i in range(4)]
    later = tenant.run("logs", "f", {"tag": "d"})
    assert [entry["message"] for entry in later.json()["logs"]] == [f"d{i}" for i in range(4)]
    tenant.survived()
