"""Multi-node torchrun on one machine: two agents (`--nnodes 2`, one process each) meet through
the c10d rendezvous on 127.0.0.1, train the FSDP2 toy, and end bitwise where the single-node
2-process run of the same job ends (the same world size, the same collectives)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch
from _launch import ROOT, TOY, child_env, free_port, torchrun_cmd
from conftest import FSDP2_ARGS, STEPS


def test_two_nodes_on_one_machine(tmp_path: Path, fsdp2_runs: Path) -> None:
    port = free_port()
    args = [str(TOY), "--strategy", "fsdp2", "--steps", str(STEPS), *FSDP2_ARGS]
    args += ["--run-dir", str(tmp_path)]
    # Each agent logs to a file: with pipes read one after the other, a chatty node 1 could fill
    # its pipe and block while node 0 waits for it in a collective (a deadlock, not a failure).
    logs = [tmp_path / f"node{node}.log" for node in (0, 1)]
    env = {**child_env(), "GLOO_SOCKET_IFNAME": "lo"}  # both "nodes" talk over loopback
    agents = [
        subprocess.Popen(
            torchrun_cmd(args, nproc=1, nodes=(node, 2), port=port),
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for node, log in zip((0, 1), logs)
    ]
    try:
        for agent in agents:
            agent.wait(timeout=300)
    finally:
        for agent in agents:  # never leave a hung agent behind
            if agent.poll() is None:
                agent.kill()
    for node, (agent, log) in enumerate(zip(agents, logs)):
        out = log.read_text()
        assert agent.returncode == 0, f"node {node} exited {agent.returncode}:\n{out[-3000:]}"
    two_nodes = torch.load(tmp_path / "final.pt", weights_only=True)
    one_node = torch.load(fsdp2_runs / "ref" / "final.pt", weights_only=True)
    assert sorted(two_nodes) == sorted(one_node)
    assert all(two_nodes[k].equal(one_node[k]) for k in one_node)
