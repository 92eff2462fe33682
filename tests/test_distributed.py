"""Data-parallel training over processes (torch.distributed, gloo on loopback): the gradient
exchange against hand-computed sums, identical parameters on every rank, and real torchrun
runs of the CLI whose model scores like a one-process one and serves like any other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from serving_helpers import assert_same, client, expected, free_port, pairs
from test_neural import NEURAL, SMALL

from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.data.sessions import SessionData
from nextclick.models import create_model
from nextclick.training import distributed
from nextclick.training.distributed import Combined, Group, StepExchange

ROOT = Path(__file__).resolve().parents[1]
RSC15 = ROOT / "data" / "rsc15-100k"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _spawn(target, tmp_path: Path, *args: object) -> list:
    """Run ``target(rank, *args)`` in two gloo processes; their pickled results by rank."""
    port = free_port()
    mp.spawn(_join, args=(target, port, tmp_path, args), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _join(rank: int, target, port: int, tmp_path: Path, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    try:
        torch.save(target(rank, *args), tmp_path / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def _grads(rows: list[int], inputs: list[int], base: float) -> Combined:
    """Gradients whose every entry says where it came from (d_out = 2, d_in = 3)."""
    k, n = len(rows), len(inputs)
    return Combined(
        dense=torch.full((4,), base),
        rows=torch.tensor(rows),
        d_rows=base + torch.arange(k * 2, dtype=torch.float32).view(k, 2),
        d_bias=base + 10 + torch.arange(k, dtype=torch.float32),
        inputs=torch.tensor(inputs),
        d_inputs=base + torch.arange(n * 3, dtype=torch.float32).view(n, 3),
    )


def _exchange_steps(rank: int) -> list:
    exchange = StepExchange(Group(rank, 2), d_out=2, d_in=3)
    # Rank 0 has two steps, rank 1 one: rank 1 idles through rank 0's second.
    mine = [_grads([1, 3], [3, 4, 4], 100.0), _grads([2], [], 300.0)] if rank == 0 else [
        _grads([5, 3, 7], [9], 200.0)]  # fmt: skip
    out = []
    for step in exchange.batches(mine):
        got = exchange.idle(torch.zeros(4)) if step is distributed.IDLE else exchange.combine(step)
        if got is not None:
            fields = {f: getattr(got, f) for f in Combined.__dataclass_fields__}
            out.append({f: v.tolist() if torch.is_tensor(v) else v for f, v in fields.items()})
    return out


def test_exchange_sums_every_ranks_rows_and_keeps_the_ranks_in_step(tmp_path):
    results = _spawn(_exchange_steps, tmp_path)
    assert results[0] == results[1]  # both ranks apply the same update
    first, second = results[0]
    assert (first["n_trained"], second["n_trained"]) == (2, 1)
    # Step 1: both ranks trained, so sums are halved. Row 3 is on both ranks: rank 0's
    # [102, 103] (bias 111) plus rank 1's [202, 203] (bias 211).
    assert first["dense"] == [150.0] * 4
    assert first["rows"] == [1, 3, 5, 7]
    assert first["d_rows"] == [[50, 50.5], [152, 153], [100, 100.5], [102, 102.5]]
    assert first["d_bias"] == [55, 161, 105, 106]
    assert first["inputs"] == [3, 4, 4, 9]  # repeats kept: the optimizer sums them
    assert first["d_inputs"][0] == [50, 50.5, 51] and first["d_inputs"][3] == [100, 100.5, 101]
    # Step 2: rank 1 is idle, so rank 0's gradients are taken whole.
    assert second["dense"] == [300.0] * 4
    assert (second["rows"], second["d_rows"], second["d_bias"]) == ([2], [[300, 301]], [310])
    assert second["inputs"] == [] and second["d_inputs"] == []


def _sessions() -> tuple[SessionData, ItemIndex]:
    events = read_events(RSC15 / "yoochoose-clicks-100k_train_full.txt.gz")
    events = events[events["SessionId"] < events["SessionId"].quantile(0.1)]
    index = ItemIndex.from_items(events["ItemId"].to_numpy())
    return encode_sessions(events, index).sessions, index


def _fit_on_rank(rank: int, params: dict) -> dict:
    sessions, index = _sessions()
    model = create_model("gru4rec", params)
    model.fit(sessions, index)
    return {name: p.numpy().copy() for name, p in model.params_.items()}


@pytest.mark.parametrize(
    "params",
    [
        {"loss": "cross-entropy", "constrained_embedding": True, "n_sample": 64},
        {"loss": "bpr-max", "constrained_embedding": False, "embedding": 8, "n_sample": 0},
    ],
    ids=["shared-embedding", "separate-embedding"],
)
def test_every_rank_ends_with_the_same_parameters(tmp_path, params):
    params = {"layers": [16], "batch_size": 8, "n_epochs": 2, **params}
    ranks = _spawn(_fit_on_rank, tmp_path, params)
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    # ... and they trained: not the shared initialisation any more, nor one rank's own run.
    alone = _fit_on_rank(0, params)
    assert not np.allclose(ranks[0]["Wy"], alone["Wy"])


def _fit_neural_on_rank(rank: int, name: str) -> dict:
    sessions, index = _sessions()
    model = create_model(name, {**SMALL[name], "n_epochs": 1, "batch_size": 64})
    model.fit(sessions, index)
    return {k: v.detach().numpy().copy() for k, v in model.network_.state_dict().items()}


@pytest.mark.parametrize("name", NEURAL)
def test_neural_ranks_end_with_the_same_weights(tmp_path, name):
    ranks = _spawn(_fit_neural_on_rank, tmp_path, name)
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    alone = _fit_neural_on_rank(0, name)
    assert any(not np.allclose(ranks[0][key], alone[key]) for key in alone)


def test_shards_partition_the_sessions():
    sessions, _ = _sessions()
    shares = [distributed.shard(sessions, Group(r, 3)) for r in range(3)]
    assert sum(s.n_sessions for s in shares) == sessions.n_sessions
    assert sorted(np.concatenate([s.session_ids for s in shares])) == sorted(sessions.session_ids)
    second = shares[1]
    for s in range(0, second.n_sessions, 97):
        np.testing.assert_array_equal(second.session(s), sessions.session(3 * s + 1))


def _cli(*args: str, nproc: int, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, "--nproc-per-node", str(nproc), "-m", "nextclick", "-q",
                           *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600, check=False)  # fmt: skip


def _train_and_score(tmp_path: Path, nproc: int) -> tuple[dict, dict]:
    out = tmp_path / f"model{nproc}"
    done = _cli("train", "--model", "gru4rec", "--preset", "rsc15", "--param", "n_epochs=2",
                "--train", str(RSC15 / "yoochoose-clicks-100k_train_full.txt.gz"),
                "--out", str(out), "--json", nproc=nproc, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    scored = subprocess.run(
        [sys.executable, "-m", "nextclick", "-q", "evaluate", "--model-dir", str(out),
         "--test", str(RSC15 / "yoochoose-clicks-100k_test.txt.gz"), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return record, json.loads(scored.stdout)["metrics"]


def test_torchrun_two_processes_score_like_one_and_the_model_serves(tmp_path):
    one, one_metrics = _train_and_score(tmp_path, 1)
    two, two_metrics = _train_and_score(tmp_path, 2)
    assert "world_size" not in one and two["world_size"] == 2
    # The epochs' figures are the job's: the same training targets as one process.
    assert [e["loss"] > 0 for e in two["epochs"]] == [True, True]
    one_targets = one["train_events_per_second"] * sum(e["seconds"] for e in one["epochs"])
    two_targets = two["train_events_per_second"] * sum(e["seconds"] for e in two["epochs"])
    assert two_targets == pytest.approx(one_targets, rel=1e-6)
    # Within the seed-to-seed spread of the one-process model on this sample (3 seeds of
    # docs/benchmarks/gru4rec_rsc15_100k.json: Recall@20 0.672-0.682, MRR@20 0.352-0.356).
    assert abs(two_metrics["recall@20"] - one_metrics["recall@20"]) < 0.015
    assert abs(two_metrics["mrr@20"] - one_metrics["mrr@20"]) < 0.01
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model1", "model2"]  # rank 0 only
    model_dir = tmp_path / "model2"
    clicks = read_events(RSC15 / "yoochoose-clicks-100k_test.txt.gz")["ItemId"].tolist()[:3]
    with client(model_dir) as c:
        for n in (1, 2, 3):
            got = c.post("/v1/sessions/s/events", json={"item_id": clicks[n - 1], "k": 10})
            assert got.status_code == 200
            assert_same(pairs(got.json()), expected(model_dir, clicks[:n], 10))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--model", "gru4rec", "--train", "x", "--test", "y"],
         "only 'nextclick train' runs under torchrun, not 'run'"),
        (["train", "--model", "itemknn", "--train", "x", "--out", "m"],
         "itemknn trains in one process only"),
        (["train", "--model", "gru4rec", "--train", "missing.tsv", "--out", "m"],
         "missing.tsv: no such file"),
    ],
)  # fmt: skip
def test_torchrun_errors_are_one_line_from_rank_zero(tmp_path, args, message):
    done = _cli(*args, nproc=2, cwd=tmp_path)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("nextclick: error:")]
    assert len(ours) == 1 and message in ours[0]
    assert "Traceback" not in "\n".join(
        line for line in done.stderr.splitlines() if "nextclick" in line
    )
    assert not (tmp_path / "m").exists()
