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
    "adam_maximize": ("adam", per_member(lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=WD, maximize=[True] * N)),
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

    def __init__(self, case: str, exclude: bool = False, n: int = N, seed: int = 0, pick: int | None = None) -> None:
        self.name, options = CASES[case]
        options = options if pick is None else [options[pick]]  # one member's options, for every member
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
        """Each member's rate at step k: the schedule moves (adadelta's rates are around 1)."""
        t = self.k / 5
        lrs = [(1 - t) * a + t * b for a, b in zip(LRS[0] * 4, LRS[1] * 4)][: self.n]
        return [10 * x for x in lrs] if self.name == "adadelta" else lrs

    def step(self, active: list[bool] | None = None, torch_too: bool = True) -> None:
        """One step of both sides on the same random gradients; inactive members get NaN and no torch step."""
        active = active or [True] * self.n
        lrs = self.lr()
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


def snapshot(setup: Setup, m: int) -> list[torch.Tensor]:
    """Member m's params and every stacked state slice and its step count, copied."""
    state = [v[i][m].clone() for v in setup.opt.state.values() for i in range(len(SHAPES))]
    return [*(p.detach()[m].clone() for p in setup.stack), *state, setup.opt.steps[m].clone()]


@pytest.mark.parametrize("case", CASES)
def test_an_inactive_member_with_nan_gradients_stays_exactly_as_it_was(case: str) -> None:
    setup = Setup(case)
    setup.step()
    before = snapshot(setup, 2)
    for _ in range(3):  # member 2 sits out with NaN gradients (its torch optimizer takes no step)
        setup.step(active=[True, True, False, True])
        assert all(torch.equal(a, b) for a, b in zip(before, snapshot(setup, 2)))
        check(setup, case, [0, 1, 3])
    for _ in range(2):  # back in: its own step count goes on from 1 (Adam's bias correction, Adagrad's decay)
        setup.step()
        check(setup, case)
    assert float(setup.opt.steps[2]) == 3 and float(setup.opt.steps[0]) == 6


@pytest.mark.parametrize("case", CASES)
def test_export_then_torch_steps_equal_stacked_steps(case: str) -> None:
    setup = Setup(case)
    for _ in range(3):
        setup.step(torch_too=False)  # no reference: the export alone must carry the state
    m = 1
    params = setup.member_params(m)
    optimizer = setup.torch_optimizer(m, params)
    setup.opt.export_member(m, optimizer, params)
    optimizer.load_state_dict(optimizer.state_dict())  # what a checkpoint holds is enough
    for _ in range(2):
        lr = setup.lr()[m]
        setup.step(torch_too=False)
        setup.torch_step(m, lr, optimizer, params)
        worst = setup.difference(m, params, optimizer)
        LARGEST[case] = max(LARGEST.get(case, 0.0), worst)
        assert worst <= 1e-6


@pytest.mark.parametrize("case", CASES)
def test_import_of_a_torch_optimizer_then_stacked_steps_equal_torch_continuing(case: str) -> None:
    setup = Setup(case)
    for _ in range(3):  # the stack's slices get params and state of their own, which the imports must replace
        setup.step(torch_too=False)
    gen, lrs = torch.Generator().manual_seed(1), setup.lr()
    for _ in range(3):  # member 3's resumed run: 3 steps of its own torch optimizer
        for p in setup.members[3]:
            p.grad = torch.randn(p.shape, generator=gen)
        setup.torch[3].param_groups[0]["lr"] = lrs[3]
        setup.torch[3].step()
    for m in (0, 3):  # member 0's torch optimizer never stepped: a fresh run's (Adagrad's holds its initial sums)
        setup.opt.import_member(m, setup.torch[m], setup.members[m])
        for s, p in zip(setup.stack, setup.members[m]):
            s.detach()[m] = p.detach()
    steps = {"sgd": 0, "momentum": 1, "nesterov": 1}.get(case, 3)  # SGD counts no steps: a buffer means "stepped"
    assert float(setup.opt.steps[0]) == 0 and float(setup.opt.steps[3]) == steps
    check(setup, case, [0, 3])
    for _ in range(2):
        setup.step(active=[True, False, False, True])
        check(setup, case, [0, 3])


@pytest.mark.parametrize("case", ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "adadelta"])
def test_exclude_bias_and_norm_leaves_one_dimensional_params_undecayed(case: str) -> None:
    setup = Setup(case, exclude=True)  # torch's side: build_optimizer's two groups, the 1-D one at weight_decay 0
    assert [len(g["params"]) for g in setup.torch[0].param_groups] == [2, 1]
    for _ in range(4):
        setup.step()
        check(setup, case)
    plain = Setup(case, exclude=False)
    for _ in range(4):
        plain.step()
    differ = [not torch.equal(a, b) for a, b in zip(setup.stack, plain.stack)]
    assert differ == [False, True, False]  # the same gradients: only the 1-D param, decayed in `plain` alone


@pytest.mark.parametrize(("name", "key", "options"), [
    ("momentum", "nesterov", {"momentum": 0.9, "nesterov": True}),
    ("adam", "amsgrad", {"amsgrad": True}),
    ("adamw", "amsgrad", {"amsgrad": True}),
    ("rmsprop", "centered", {"centered": True}),
    ("rmsprop", "maximize", {"maximize": True}),
])
def test_members_must_agree_on_boolean_options(name: str, key: str, options: dict[str, Any]) -> None:
    params = [torch.zeros(2, 3, requires_grad=True)]
    with pytest.raises(ValueError, match=f"optim.{key} differs"):
        StackedOptimizer(name, params, [options, {**options, key: False}], [True])
    StackedOptimizer(name, params, [options, {**options, "lr": 0.5}], [True])  # equal booleans: fine


def test_the_seven_built_ins_are_stackable_and_a_users_optimizer_is_not() -> None:
    assert all(stackable_optimizer(n) for n in ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "adadelta"))
    assert not stackable_optimizer("lion")
    with pytest.raises(ValueError, match="cannot be stacked"):
        StackedOptimizer("lion", [torch.zeros(1, 2, requires_grad=True)], [{}], [True])


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched (views included), as bench/engine_vs_loop.py's OpCounter does."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += not str(func).startswith("profiler.")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", CASES)
def test_the_op_count_of_a_step_does_not_depend_on_the_number_of_members(case: str) -> None:
    """N=1 and N=16 of one member's options, N=4 and N=16 of the four (the same host-known branches: whether
    some member decays, has momentum ...)."""
    assert ops_per_step(case, 1, pick=1) == ops_per_step(case, 16, pick=1) > 0
    assert ops_per_step(case, 4) == ops_per_step(case, 16) > 0


def ops_per_step(case: str, n: int, pick: int | None = None) -> int:
    setup = Setup(case, n=n, pick=pick)
    setup.step(torch_too=False)  # the first step made the constant columns
    for p in setup.stack:
        p.grad = torch.randn(p.shape)
    lr, active = torch.full((n,), 0.01, dtype=torch.float64), torch.rand(n) < 0.5
    with OpCounter() as counter:
        setup.opt.step(lr, active)
    return counter.count
