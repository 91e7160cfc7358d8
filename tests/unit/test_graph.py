"""The critical path the demo prints and the makespan benchmark computes."""

from __future__ import annotations

from dev.graph import critical_path


def test_the_longest_chain_wins_and_is_listed_first_to_last():
    upstream = {"src": set(), "a": {"src"}, "b": {"src"}, "c": {"a", "b"}, "d": {"b"}}
    seconds = {"src": 1.0, "a": 5.0, "b": 2.0, "c": 1.0, "d": 3.0}
    assert critical_path(upstream, seconds) == (7.0, ["src", "a", "c"])


def test_tasks_without_a_time_count_nothing():
    upstream = {"src": set(), "a": {"src"}, "b": {"a"}}
    assert critical_path(upstream, {"a": 2.5, "b": 0.5}) == (3.0, ["src", "a", "b"])
