"""The training thread count (dltrain/threads.py): a pure rule on the forward FLOPs per step and the core count,
the FLOP estimate itself, what overrides the rule, and what real runs record and a resume reuses."""
from __future__ import annotations

import pytest
import torch

from dltrain.models import MODELS
from dltrain.run import threads
from dltrain.run.assemble import build
from dltrain.run.threads import FLOPS_PER_THREAD, ThreadChoice, auto_threads, choose, forward_flops
from tests.conftest import parse, run
from tests.test_config import MODEL_DATA

SMALL = ["data=digits", "model.hidden=[32]", "trainer.max_epochs=1", "trainer.log_every_n_steps=0"]
# digits (64 inputs) through 64-2048-2048-10 at batch 128: 2 x 4.35M multiply-adds x 128 = 1.11 GFLOP per step
BIG = ["data=digits", "model.hidden=[2048,2048]", "data.batch_size=128", "trainer.max_epochs=1",
       "trainer.log_every_n_steps=0"]


def test_the_rule_is_a_pure_function_of_the_work_per_step_and_the_cores() -> None:
    assert [auto_threads(f, 16) for f in (0, 1e6, FLOPS_PER_THREAD - 1)] == [1, 1, 1]  # small: one thread
    assert auto_threads(2 * FLOPS_PER_THREAD, 16) == 2 and auto_threads(5.5 * FLOPS_PER_THREAD, 16) == 5
    assert auto_threads(1e15, 16) == 16 and auto_threads(1e15, 2) == 2 and auto_threads(1e15, 1) == 1  # <= cores
    assert [auto_threads(3e9, 8) for _ in range(3)] == [auto_threads(3e9, 8)] * 3


def test_forward_flops_count_layers_and_recurrent_steps_and_leave_the_model_as_it_was() -> None:
    mlp = build(parse(["data=digits", "model.hidden=[128,64]", "model.batch_norm=true"])).model
    assert forward_flops(mlp, torch.zeros(1, 1, 8, 8)) == 2 * (64 * 128 + 128 * 64 + 64 * 10)
    lstm = build(parse(["data=adding", "model=lstm", "model.hidden_size=8", "data.length=5", "data.train_size=64",
                        "data.val_size=8", "data.test_size=8"])).model
    state = {k: v.clone() for k, v in lstm.state_dict().items()}
    rng = torch.get_rng_state()
    lstm.train()
    # 4 gates x 8 units over (2 inputs + 8 state) per time step, 5 steps; then the head reads 8 units
    assert forward_flops(lstm, torch.zeros(1, 5, 2)) == 2 * (4 * 8 * (2 + 8)) * 5 + 2 * 8 * 1
    assert lstm.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in lstm.state_dict().items())
    mlp.train()
    running = mlp.state_dict()["2.running_mean"].clone()
    forward_flops(mlp, torch.randn(1, 1, 8, 8) * 5 + 3)  # in eval mode: batch norm's running statistics stay
    assert mlp.training and torch.equal(mlp.state_dict()["2.running_mean"], running)


@pytest.mark.parametrize("model", sorted(MODELS.names()))
def test_every_built_in_model_has_a_forward_flop_count(model: str) -> None:
    parts = build(parse([f"model={model}", *MODEL_DATA.get(model, [])]))
    linear_head = 2 * parts.data.num_outputs  # at least one multiply-add per output
    assert forward_flops(parts.model, parts.data.train.x[:1]) > linear_head


def test_trainer_threads_then_the_resumed_runs_count_then_omp_num_threads_override_the_rule() -> None:
    big = 10 * FLOPS_PER_THREAD
    assert choose(big, 4) == ThreadChoice(4, "rule", big)
    assert choose(1e6, 4) == ThreadChoice(1, "rule", 1e6)
    assert choose(1e6, 4, explicit=3, recorded=2, pinned=5).source == "trainer.threads"
    assert choose(1e6, 4, recorded=2, pinned=5) == ThreadChoice(2, "resumed run", 1e6)
    assert choose(1e6, 4, pinned=5) == ThreadChoice(5, "OMP_NUM_THREADS", 1e6)


def test_runs_record_the_rules_count_the_same_for_the_same_config(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = threads.cores_per_process()
    small, again = run(SMALL, tmp_path / "a"), run(SMALL, tmp_path / "b")
    assert (small["threads"], small["threads_from"]) == (1, "rule")
    assert (again["threads"], again["forward_flops_per_step"]) == (1, small["forward_flops_per_step"])
    big = run(BIG, tmp_path / "big")
    assert big["forward_flops_per_step"] == 2 * (64 * 2048 + 2048 * 2048 + 2048 * 10) * 128
    assert (big["threads"], big["threads_from"]) == (min(cores, 2), "rule")  # 1.11 GFLOP: 2 threads where there are 2
    explicit = run([*SMALL, "trainer.threads=3"], tmp_path / "explicit")
    assert (explicit["threads"], explicit["threads_from"]) == (3, "trainer.threads")


def test_a_resume_trains_with_the_count_its_run_recorded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the first part's count: neither the rule's (1) nor torch's default
    first = run(SMALL, tmp_path)
    assert (first["threads"], first["threads_from"]) == (3, "OMP_NUM_THREADS")
    assert torch.load(tmp_path / "last.pt", weights_only=True)["threads"] == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    resumed = run([*SMALL, "trainer.max_epochs=2", f"trainer.resume={tmp_path}"], tmp_path)
    assert (resumed["threads"], resumed["threads_from"], resumed["epochs"]) == (3, "resumed run", 2)
    old = torch.load(tmp_path / "last.pt", weights_only=True)
    del old["threads"]  # a checkpoint of a release that did not record it: the rule decides
    torch.save(old, tmp_path / "old.pt")
    assert threads.recorded_threads(str(tmp_path / "old.pt")) is None
    assert threads.recorded_threads(str(tmp_path / "missing")) is None  # the resume itself says what is wrong
