"""Where the Ray executor puts the next chunk: a pure choice over node ids, no cluster."""

from __future__ import annotations

import pytest

from ray_backfill.executors.ray import pick_node


@pytest.mark.parametrize(
    "nodes, in_flight, started, expected",
    [
        ([], {}, {}, None),
        (["a"], {"a": 3}, {"a": 9}, "a"),
        (["a", "b"], {}, {}, "a"),                                  # ties: the first node
        (["a", "b"], {}, {"a": 1}, "b"),                            # then round the nodes
        (["a", "b"], {"b": 1}, {"a": 1, "b": 1}, "a"),              # fewest in flight first
        (["a", "b"], {"a": 1}, {"a": 1, "b": 5}, "b"),              # ... even if it ran more before
        (["a", "b", "c"], {"a": 1, "b": 1}, {"a": 1, "b": 1}, "c"),
        (["b", "c"], {"a": 0}, {"a": 0, "b": 2, "c": 1}, "c"),      # a node that left is not chosen
    ],
)
def test_pick_node_spreads_attempts_over_the_nodes(nodes, in_flight, started, expected):
    assert pick_node(nodes, in_flight, started) == expected


def test_a_run_of_sequential_and_parallel_tasks_uses_every_node():
    in_flight: dict[str, int] = {}
    started: dict[str, int] = {}
    placed = []

    def start():
        node = pick_node(["n1", "n2"], in_flight, started)
        in_flight[node] = in_flight.get(node, 0) + 1
        started[node] = started.get(node, 0) + 1
        placed.append(node)
        return node

    def finish(node):
        in_flight[node] -= 1

    finish(start())  # prepare
    chunks = [start(), start()]  # two bronze chunks in parallel
    for node in chunks:
        finish(node)
    finish(start())  # silver
    finish(start())  # gold
    assert placed == ["n1", "n2", "n1", "n2", "n1"]
    assert set(chunks) == {"n1", "n2"}
