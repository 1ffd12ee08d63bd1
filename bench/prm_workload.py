"""The beam-search-shaped PRM workload both PRM benches send (``bench.prm_throughput`` over HTTP,
``bench.prm_gpu`` in process): each client, at every depth, scores 4 candidates that share its
accepted steps and differ in the last one, like the proxy's beam search."""

from __future__ import annotations

CLIENTS = 16
DEPTH = 10  # MATH solutions run ~10 steps (the paper's depth limit is 40)
WIDTH = 4
PROBLEM = (
    "Problem {client}: A bakery sells muffins for 3 dollars each and cookies for 2 dollars each. "
    "On Monday it sold 40 muffins and 65 cookies; on Tuesday it sold twice as many muffins and "
    "15 fewer cookies than on Monday. How much money did the bakery take in over the two days?"
)


def step(client: int, depth: int, branch: int) -> str:
    return f"Step {depth}: client {client} tries {branch} + {depth} = {branch + depth}."
