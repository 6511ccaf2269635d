"""The supervisor's restart budget is a rate (burst per interval), not a lifetime count."""

from __future__ import annotations

from etar_stack.supervisor import RestartBudget


def test_the_burst_is_allowed_then_the_service_waits_for_the_window() -> None:
    budget = RestartBudget(burst=5, interval=600)
    for second in range(5):
        assert budget.wait(second * 10.0) == 0
        assert budget.record(second * 10.0) == second + 1
    assert budget.wait(45.0) == 555.0  # the first restart (at 0 s) leaves the window at 600 s
    assert budget.wait(599.0) == 1.0
    assert budget.wait(600.0) == 0  # …and then one more is allowed
    assert budget.record(600.0) == 5


def test_restarts_spread_out_are_never_refused() -> None:
    """A lifetime count refused the 6th restart forever; a rate allows one every 2 minutes
    for ever (5 in 10 minutes)."""
    budget = RestartBudget(burst=5, interval=600)
    for turn in range(50):
        now = turn * 121.0
        assert budget.wait(now) == 0, turn
        assert budget.record(now) <= 5


def test_a_crash_loop_is_held_to_the_rate() -> None:
    budget = RestartBudget(burst=3, interval=60)
    now, restarts = 0.0, []
    while now < 300:
        wait = budget.wait(now)
        if wait == 0:
            budget.record(now)
            restarts.append(now)
        now += 1.0 if wait == 0 else wait
    windows = [sum(1 for t in restarts if start <= t < start + 60) for start in restarts]
    assert max(windows) == 3 and len(restarts) == 15  # 3 per minute over 5 minutes


def test_backoff_grows_with_the_restarts_in_the_window_and_is_capped() -> None:
    assert [RestartBudget.backoff(n) for n in (1, 2, 3, 4, 5, 9)] == [2, 4, 8, 16, 30, 30]
