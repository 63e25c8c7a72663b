"""SharedLock: many hold it shared at once, one alone exclusively, and one waiting to hold
it alone is not kept out by those that come to share it after it."""

from __future__ import annotations

import threading

from otel_tokens._base.shared_lock import SharedLock


def _in_thread(work: object) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_many_threads_hold_it_shared_at_once() -> None:
    lock = SharedLock()
    inside = threading.Barrier(3, timeout=10)

    def share() -> None:
        with lock.shared():
            inside.wait()  # all three are inside together, or this breaks

    threads = [_in_thread(share) for _ in range(3)]
    for thread in threads:
        thread.join(10)
    assert not inside.broken


def test_an_exclusive_holder_waits_for_the_shared_ones_and_keeps_new_ones_out() -> None:
    lock = SharedLock()
    order: list[str] = []
    sharing, may_leave = threading.Event(), threading.Event()

    def first() -> None:
        with lock.shared():
            sharing.set()
            may_leave.wait(10)
            order.append("first shared leaves")

    def alone() -> None:
        with lock:
            order.append("exclusive")

    def later() -> None:
        with lock.shared():
            order.append("later shared")

    threads = [_in_thread(first)]
    assert sharing.wait(10)
    threads.append(_in_thread(alone))
    while not lock._waiting:  # the exclusive one waits now
        threading.Event().wait(0.001)
    threads.append(_in_thread(later))  # comes after it: must not get in first
    assert lock.acquire(timeout=0.05) is False  # held shared: no one else gets it alone
    may_leave.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first shared leaves", "exclusive", "later shared"]


def test_an_exclusive_wait_that_times_out_lets_the_shared_ones_in() -> None:
    lock = SharedLock()
    assert lock.acquire(timeout=1)
    assert lock.acquire(timeout=0.01) is False  # not reentrant, and it gave up
    lock.release()
    with lock.shared():  # nothing waits: sharing goes on at once
        assert lock.acquire(timeout=0.01) is False
    assert lock.acquire(timeout=0)
    lock.release()
