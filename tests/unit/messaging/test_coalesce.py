"""The coalescer: concurrent calls share a batch, each gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from nurture.messaging.coalesce import Coalescer


def test_concurrent_calls_share_batches_and_get_their_own_outcomes() -> None:
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[BaseException | None]:
        batches.append(items)
        return [ValueError(f"odd {i}") if i % 2 else None for i in items]

    async def scenario() -> list[BaseException | None]:
        coalescer: Coalescer[int] = Coalescer(run, max_size=4, linger=0.01)
        results = await asyncio.gather(
            *(coalescer.submit(i) for i in range(10)), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    results = asyncio.run(scenario())
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # full batches go at once
    assert [r is None for r in results] == [i % 2 == 0 for i in range(10)]
    assert str(results[3]) == "odd 3"


def test_a_cancelled_caller_does_not_stop_its_batch() -> None:
    finished: list[int] = []

    async def run(items: list[int]) -> list[BaseException | None]:
        await asyncio.sleep(0.05)
        finished.extend(items)  # the bookkeeping of the whole batch still happens
        return [None] * len(items)

    async def scenario() -> None:
        coalescer: Coalescer[int] = Coalescer(run, max_size=10, linger=0.001)
        first = asyncio.create_task(coalescer.submit(1))
        second = asyncio.create_task(coalescer.submit(2))
        await asyncio.sleep(0.02)
        first.cancel()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        await coalescer.wait_idle()

    asyncio.run(scenario())
    assert finished == [1, 2]


def test_a_failing_batch_fails_every_caller() -> None:
    async def run(items: list[int]) -> list[BaseException | None]:
        raise RuntimeError("database down")

    async def scenario() -> list[BaseException]:
        coalescer: Coalescer[int] = Coalescer(run, max_size=10, linger=0.001)
        results = await asyncio.gather(
            coalescer.submit(1), coalescer.submit(2), return_exceptions=True
        )
        return [r for r in results if isinstance(r, BaseException)]

    errors = asyncio.run(scenario())
    assert len(errors) == 2 and all(str(e) == "database down" for e in errors)


def test_a_new_event_loop_is_not_blocked_by_one_that_ended_mid_batch() -> None:
    async def run(items: list[int]) -> list[BaseException | None]:
        return [None] * len(items)

    coalescer: Coalescer[int] = Coalescer(run, max_size=10, linger=60.0)

    async def abandoned() -> None:
        task = asyncio.create_task(coalescer.submit(1))
        await asyncio.sleep(0)  # pending, its timer an hour away; the loop ends now

        task.cancel()

    asyncio.run(abandoned())
    coalescer.linger = 0.001

    async def later() -> None:
        await asyncio.wait_for(coalescer.submit(2), timeout=5)

    asyncio.run(later())
