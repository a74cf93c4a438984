"""core/stack_optim: each of the seven built-in optimizers for N stacked members, checked member by member against
its own torch.optim instance (built as dltrain builds a run's) on the same gradients: every numeric option
different per member, a per-step lr that changes, inactive members with NaN gradients left exactly alone, export
to and import from torch optimizers, exclude_bias_and_norm, refused boolean mixes, and an op count free of N."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dltrain.core.optim import ParamGroup, build_optimizer
from dltrain.core.registry import Spec
from dltrain.core.stack_optim import StackedOptimizer, stackable_optimizer

# a weight, a bias (1-D: exclude_bias_and_norm's), a conv-like weight; 37 * 9 elements take torch's vector kernels
SHAPES = [(37, 9), (9,), (2, 3, 4, 3)]
N = 4
LRS = [[0.1, 0.05, 0.2, 0.01], [0.3, 0.02, 0.01, 0.05]]  # lr of step k: a blend of these two rows


def per_member(**values: list[Any]) -> list[dict[str, Any]]:
    return [{k: v[m] for k, v in values.items()} for m in range(N)]


WD = [0.0, 1e-2, 0.1, 1e-3]
BETAS = [[0.9, 0.999], [0.8, 0.99], [0.95, 0.9], [0.5, 0.999]]
EPS = [1e-8, 1e-6, 1e-3, 1e-7]
CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "sgd": ("sgd", per_member(lr=LRS[0], weight_decay=WD)),
    "momentum": ("momentum", per_member(lr=LRS[0], momentum=[0.9, 0.5, 0.0, 0.99], dampening=[0.0, 0.1, 0.5, 0.2],
                                        weight_decay=WD)),
    "nesterov": ("momentum", per_member(lr=LRS[0], momentum=[0.9, 0.5, 0.7, 0.99], dampening=[0.0] * N,
                                        nesterov=[True] * N, weight_decay=WD)),
    "adam": ("adam", per_member(lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=WD)),
    "adam_amsgrad": ("adam", per_member(lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=WD, amsgrad=[True] * N)),
    "adamw": ("adamw", per_member(lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=[0.01, 0.0, 0.3, 1e-4])),
    "adamw_amsgrad": ("adamw", per_member(lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=[0.01, 0.0, 0.3, 1e-4],
                                          amsgrad=[True] * N)),
    "rmsprop": ("rmsprop", per_member(lr=LRS[0], alpha=[0.99, 0.9, 0.5, 0.8], eps=EPS,
                                      momentum=[0.0, 0.9, 0.5, 0.1], weight_decay=WD)),
    "rmsprop_centered": ("rmsprop", per_member(lr=LRS[0], alpha=[0.99, 0.9, 0.5, 0.8], eps=EPS,
                                               momentum=[0.3, 0.9, 0.5, 0.1], centered=[True] * N,
                                               weight_decay=WD)),
    "adagrad": ("adagrad", per_member(lr=LRS[0], lr_decay=[0.0, 0.01, 0.1, 1e-3], eps=[1e-10, 1e-6, 1e-3, 1e-8],
                                      initial_accumulator_value=[0.0, 0.1, 1.0, 0.01], weight_decay=WD)),
    "adadelta": ("adadelta", per_member(lr=[1.0, 0.5, 2.0, 0.1], rho=[0.9, 0.5, 0.99, 1.0], eps=EPS,
                                        weight_decay=WD)),
}
LARGEST: dict[str, float] = {}  # case -> largest relative difference seen (the notes report these)


class Setup:
    """A stacked optimizer and, beside it, each member's own parameters and torch optimizer."""

    def __init__(self, case: str, exclude: bool = False, n: int = N, seed: int = 0) -> None:
        self.name, options = CASES[case]
        options = [{**o, "exclude_bias_and_norm": exclude} for o in (options * n)[:n]]
        self.options = options
        gen = torch.Generator().manual_seed(seed)
        self.stack = [torch.randn(n, *s, generator=gen).requires_grad_() for s in SHAPES]
        decays = [not exclude or len(s) >= 2 for s in SHAPES]
        self.opt = StackedOptimizer(self.name, self.stack, options, decays)
        self.members = [self.member_params(m) for m in range(n)]
        self.torch = [self.torch_optimizer(m, self.members[m]) for m in range(n)]
        self.gen, self.n, self.k = gen, n, 0

    def member_params(self, m: int) -> list[torch.nn.Parameter]:
        return [torch.nn.Parameter(p.detach()[m].clone()) for p in self.stack]

    def torch_optimizer(self, m: int, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return build_optimizer(Spec("optim", self.name, self.options[m]), [ParamGroup(list(params))])

    def lr(self) -> list[float]:
        t = self.k / 5
        return [(1 - t) * a + t * b for a, b in zip(LRS[0] * 4, LRS[1] * 4)][: self.n]

    def step(self, active: list[bool] | None = None, torch_too: bool = True) -> None:
        """One step of both sides on the same random gradients; inactive members get NaN and no torch step."""
        active = active or [True] * self.n
        lrs = self.lr() if self.name != "adadelta" else [10 * x for x in self.lr()]
        for p in self.stack:
            p.grad = torch.randn(p.shape, generator=self.gen)
            p.grad[[m for m in range(self.n) if not active[m]]] = float("nan")
        for m in range(self.n):
            if active[m] and torch_too:
                self.torch_step(m, lrs[m])
        self.opt.step(torch.tensor(lrs, dtype=torch.float64), torch.tensor(active))
        self.k += 1

    def torch_step(self, m: int, lr: float, optimizer: torch.optim.Optimizer | None = None,
                   params: list[torch.nn.Parameter] | None = None) -> None:
        optimizer, params = optimizer or self.torch[m], params or self.members[m]
        for p, s in zip(params, self.stack):
            p.grad = s.grad[m].clone()
        for group in optimizer.param_groups:  # as the engine writes the schedule's rate
            group["lr"] = lr
        optimizer.step()

    def difference(self, m: int, params: list[torch.nn.Parameter] | None = None,
                   optimizer: torch.optim.Optimizer | None = None) -> float:
        """Largest relative difference between member m's slice and its torch side: params and state."""
        params, optimizer = params or self.members[m], optimizer or self.torch[m]
        worst = max(relative(s.detach()[m], p.detach()) for s, p in zip(self.stack, params))
        exported_params = self.member_params(m)
        exported = self.torch_optimizer(m, exported_params)
        self.opt.export_member(m, exported, exported_params)
        ours = [exported.state.get(p, {}) for p in exported_params]
        theirs = [optimizer.state.get(p, {}) for p in params]
        assert [sorted(s) for s in ours] == [sorted(s) for s in theirs]
        for a, b in zip(ours, theirs):
            worst = max([worst, *(relative(a[k], b[k]) for k in a)])
        return worst


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    if torch.equal(a, b):
        return 0.0
    return ((a - b).abs() / b.abs().clamp_min(1e-30)).max().item()


@pytest.fixture(scope="module", autouse=True)
def report() -> Any:
    yield
    print("\nlargest relative difference per case:", {k: f"{v:.3g}" for k, v in sorted(LARGEST.items())})


def check(setup: Setup, case: str, members: range | list[int] | None = None) -> None:
    for m in members if members is not None else range(setup.n):
        worst = setup.difference(m)
        LARGEST[case] = max(LARGEST.get(case, 0.0), worst)
        assert worst <= 1e-6, f"{case} member {m}: relative difference {worst:.3g}"


@pytest.mark.parametrize("case", CASES)
def test_each_member_matches_its_own_torch_optimizer(case: str) -> None:
    setup = Setup(case)
    for _ in range(6):
        setup.step()
        check(setup, case)
    assert not torch.equal(setup.stack[0].detach()[0], setup.stack[0].detach()[1])  # members really differ
