"""The run history's pieces on their own: ids, caps, write-behind batches, the concurrency limit."""

import asyncio
from collections.abc import Sequence

import pytest

from adapters.history.memory import InMemoryHistory
from application.async_runs import ConcurrencyLimit, TooManyRequests
from application.history import BATCH, HistoryPolicy, RunLog, finished, kept_parameters, new_run_id
from domain.model import LogEntry, Outcome, Status
from ports.history import RunRecord

pytestmark = pytest.mark.anyio


def a_run(run_id: str = "", is_async: bool = False) -> RunRecord:
    return RunRecord(
        run_id or new_run_id(), "demo", "f", "running", "2026-01-01T00:00:00Z", is_async=is_async
    )


async def test_run_ids_are_20_hex_digits_that_sort_in_the_order_they_were_made() -> None:
    first = new_run_id()
    await asyncio.sleep(0.002)
    second = new_run_id()
    assert len(first) == 20 and int(first, 16) >= 0 and first < second


def test_values_over_the_cap_are_left_out_and_logs_cut_with_notes() -> None:
    policy = HistoryPolicy(value_cap=100)
    logs = [LogEntry("log", "x" * 30, "2026-01-01T00:00:00Z") for _ in range(5)]
    run = finished(a_run(), Outcome(Status.SUCCEEDED, result="y" * 200, logs=logs), policy)
    assert run.result is None and len(run.logs) == 1
    assert any("result not kept" in note for note in run.notes)
    assert any("logs cut to the first 1 of 5" in note for note in run.notes)
    parameters, notes = kept_parameters({"p": "z" * 200}, policy)
    assert parameters is None and "parameters not kept" in notes[0]
    assert kept_parameters({"p": 1}, HistoryPolicy(keep_parameters=False)) == (None, [])


def test_an_async_run_keeps_its_result_past_the_sync_cap_and_with_parameters_off() -> None:
    policy = HistoryPolicy(value_cap=100, keep_parameters=False)
    run = finished(a_run(is_async=True), Outcome(Status.SUCCEEDED, result="y" * 200), policy)
    assert run.result == "y" * 200 and run.notes == ()


def test_a_failed_outcome_keeps_the_error_as_the_answer_names_it() -> None:
    outcome = Outcome(Status.TIMED_OUT, error={"message": "over 20 s"})
    run = finished(a_run(), outcome, HistoryPolicy())
    assert run.status == "timed_out" and run.error == {"type": "TimeoutError", "message": "over 20 s"}


class CountingHistory(InMemoryHistory):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def record_runs(self, runs: Sequence[RunRecord]) -> None:
        self.batches.append(len(runs))
        await super().record_runs(runs)


async def test_records_are_written_in_batches_and_on_close() -> None:
    history = CountingHistory()
    run_log = RunLog(history, HistoryPolicy(runs_kept=1000))
    run_log.start()
    for _ in range(BATCH * 2):
        run_log.record(a_run())
    assert history.batches == []  # nothing written while the runs are answered
    await run_log.aclose()
    assert sum(history.batches) == BATCH * 2 and len(history.batches) <= 3


async def test_a_run_is_readable_before_it_is_written_and_sync_runs_off_are_dropped() -> None:
    history = CountingHistory()
    run_log = RunLog(history, HistoryPolicy(runs_kept=0))
    sync_run, async_run = a_run(), a_run(is_async=True)
    run_log.record(sync_run)
    run_log.record(async_run)
    assert (await run_log.run("demo", async_run.id)).id == async_run.id  # still queued, read all the same
    await run_log.flush()
    assert [run.id for run in await history.runs("demo")] == [async_run.id]


async def test_the_limit_refuses_sync_runs_and_queues_async_ones_in_order() -> None:
    limit = ConcurrencyLimit(1)
    order: list[str] = []
    async with limit.now("demo"):
        with pytest.raises(TooManyRequests) as refused:
            async with limit.now("demo"):
                pass
        assert refused.value.details["retryAfter"] == 1
        async with limit.now("other"):  # per workspace
            pass

        async def queued(name: str) -> None:
            async with limit.queued("demo"):
                order.append(name)

        waiting = [asyncio.create_task(queued(name)) for name in "ab"]
        await asyncio.sleep(0.01)
        assert order == []
    await asyncio.gather(*waiting)
    assert order == ["a", "b"]


def test_the_history_settings_are_read_and_checked() -> None:
    from entrypoints.settings import SettingsError, load_settings

    settings = load_settings(
        {
            "FUNCTIONS_VERSIONS_KEPT": "5",
            "FUNCTIONS_RUN_HISTORY": "0",
            "FUNCTIONS_RUN_HISTORY_PARAMETERS": "no",
            "FUNCTIONS_MAX_CONCURRENT_RUNS": "4",
            "FUNCTIONS_DATABASE_URL": "postgresql://u@db/functions",
        },
        tty=False,
    )
    assert (settings.versions_kept, settings.run_history, settings.run_history_parameters) == (5, 0, False)
    assert settings.max_concurrent_runs == 4 and settings.database_url == "postgresql://u@db/functions"
    for name, value in [
        ("FUNCTIONS_VERSIONS_KEPT", "0"),
        ("FUNCTIONS_RUN_HISTORY", "-1"),
        ("FUNCTIONS_DATABASE_URL", "mysql://db"),
    ]:
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value}, tty=False)
