"""torch.optim's seven built-ins (core/optim.py's TABLE) for a stack of N members trained as one model.

Every parameter is a tensor (N, *shape), member m's slice is [m]. torch.optim's param groups cannot hold a slice,
so each numeric option is a (N,) float64 tensor, broadcast over the stack as a (N, 1, ...) column. The updates are
torch's single-tensor ones (torch/optim/sgd.py, adam.py, ...) formula by formula, in the same kernels where a
per-member tensor can stand for torch's Python scalar: a scalar torch computes in Python (Adam's step size, Adagrad's
decayed rate) is computed here in float64 and cast to the parameter's dtype, as torch's kernels cast it; addcmul
and addcdiv with a pre-scaled tensor round as torch's `value=` forms do. Inactive members (`active` False) keep
parameters, state and step count bitwise (torch.where, so a NaN gradient never leaks). Per step: no host sync, no
Python loop over members; the aten op count depends on the number of parameters, not on N.

Weight decay is coupled (added to the gradient) but for adamw (decoupled); `decays[i]` False gives parameter i
weight decay 0 for every member (exclude_bias_and_norm), and like torch then skips the op. Each member's step count
is one (N,) counter shared by its parameters (torch keeps one per parameter: they differ only for a parameter
whose grad is None on some steps but not others).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dltrain.core.optim import TABLE, preset

BOOLS = ("nesterov", "amsgrad", "centered", "maximize", "foreach", "capturable", "differentiable", "fused")
Col = Callable[[str], Tensor]  # a per-member scalar by name, as a column broadcasting over the current parameter


@dataclass(frozen=True)
class Flags:
    """What every member shares, known on the host: which branches of torch's code run."""

    nesterov: bool
    amsgrad: bool
    centered: bool
    any_momentum: bool  # some member has momentum != 0 (torch keeps a momentum buffer for it)
    all_momentum: bool  # every member has


def sgd(p: Tensor, g: Tensor, st: dict[str, Tensor], c: Col, f: Flags) -> tuple[Tensor, dict[str, Tensor]]:
    """torch.optim.sgd._single_tensor_sgd; the first step's buffer is the gradient itself."""
    if not f.any_momentum:
        return torch.addcmul(p, g, c("neg_lr")), {}
    upd = torch.addcmul(st["momentum_buffer"] * c("momentum"), g, c("one_minus_dampening"))
    buf = torch.where(c("first"), g, upd)
    d = torch.addcmul(g, buf, c("momentum")) if f.nesterov else buf
    if not f.all_momentum:  # torch skips momentum where it is 0 (else dampening would scale the gradient)
        d = torch.where(c("has_momentum"), d, g)
    return torch.addcmul(p, d, c("neg_lr")), {"momentum_buffer": buf}


def adam(p: Tensor, g: Tensor, st: dict[str, Tensor], c: Col, f: Flags) -> tuple[Tensor, dict[str, Tensor]]:
    """torch.optim.adam._single_tensor_adam (not capturable); adamw's decoupled decay is applied before."""
    m = torch.lerp(st["exp_avg"], g, c("one_minus_beta1"))
    v = torch.addcmul(st["exp_avg_sq"] * c("beta2"), g * c("one_minus_beta2"), g)
    new = {"exp_avg": m, "exp_avg_sq": v}
    if f.amsgrad:
        v = new["max_exp_avg_sq"] = torch.maximum(st["max_exp_avg_sq"], v)
    denom = v.sqrt() / c("bc2_sqrt") + c("eps")
    return torch.addcdiv(p, m * c("neg_step_size"), denom), new


def rmsprop(p: Tensor, g: Tensor, st: dict[str, Tensor], c: Col, f: Flags) -> tuple[Tensor, dict[str, Tensor]]:
    """torch.optim.rmsprop._single_tensor_rmsprop."""
    sq = torch.addcmul(st["square_avg"] * c("alpha"), g * c("one_minus_alpha"), g)
    new = {"square_avg": sq}
    if f.centered:
        ga = new["grad_avg"] = torch.lerp(st["grad_avg"], g, c("one_minus_alpha"))
        avg = torch.addcmul(sq, ga, ga, value=-1).sqrt() + c("eps")
    else:
        avg = sq.sqrt() + c("eps")
    if f.any_momentum:
        buf = new["momentum_buffer"] = torch.addcdiv(st["momentum_buffer"] * c("momentum"), g, avg)
        with_momentum = torch.addcmul(p, buf, c("neg_lr"))
        if f.all_momentum:
            return with_momentum, new
        return torch.where(c("has_momentum"), with_momentum, torch.addcdiv(p, g * c("neg_lr"), avg)), new
    return torch.addcdiv(p, g * c("neg_lr"), avg), new


def adagrad(p: Tensor, g: Tensor, st: dict[str, Tensor], c: Col, f: Flags) -> tuple[Tensor, dict[str, Tensor]]:
    """torch.optim.adagrad._single_tensor_adagrad (dense)."""
    s = torch.addcmul(st["sum"], g, g)
    return torch.addcdiv(p, g * c("neg_clr"), s.sqrt() + c("eps")), {"sum": s}


def adadelta(p: Tensor, g: Tensor, st: dict[str, Tensor], c: Col, f: Flags) -> tuple[Tensor, dict[str, Tensor]]:
    """torch.optim.adadelta._single_tensor_adadelta."""
    sq = torch.addcmul(st["square_avg"] * c("rho"), g * c("one_minus_rho"), g)
    std = (sq + c("eps")).sqrt()
    delta = (st["acc_delta"] + c("eps")).sqrt() / std * g
    acc = torch.addcmul(st["acc_delta"] * c("rho"), delta * c("one_minus_rho"), delta)
    return torch.addcmul(p, delta, c("neg_lr")), {"square_avg": sq, "acc_delta": acc}


def lr_scalars(h: dict[str, Tensor], lr: Tensor, steps: Tensor) -> dict[str, Tensor]:
    return {"neg_lr": -lr}


def sgd_scalars(h: dict[str, Tensor], lr: Tensor, steps: Tensor) -> dict[str, Tensor]:
    """`first`: an active member's first step (torch's momentum buffer is None); inactive ones are not written."""
    return {"neg_lr": -lr, "first": steps == 1}


def adam_scalars(h: dict[str, Tensor], lr: Tensor, steps: Tensor) -> dict[str, Tensor]:
    """As torch computes them in Python floats from the step count (after its increment)."""
    return {"neg_step_size": -(lr / (1 - h["beta1"] ** steps)), "bc2_sqrt": (1 - h["beta2"] ** steps).sqrt()}


def adamw_scalars(h: dict[str, Tensor], lr: Tensor, steps: Tensor) -> dict[str, Tensor]:
    """Adam's, and the factor of the decoupled decay (torch's `param.mul_(1 - lr * weight_decay)`)."""
    return {**adam_scalars(h, lr, steps), "decoupled": 1 - lr * h["weight_decay"]}


def adagrad_scalars(h: dict[str, Tensor], lr: Tensor, steps: Tensor) -> dict[str, Tensor]:
    return {"neg_clr": -(lr / (1 + (steps - 1) * h["lr_decay"]))}


@dataclass(frozen=True)
class Kind:
    """One optimizer: its update of one parameter, its per-step scalars and its state (torch's keys)."""

    update: Callable[[Tensor, Tensor, dict[str, Tensor], Col, Flags], tuple[Tensor, dict[str, Tensor]]]
    scalars: Callable[[dict[str, Tensor], Tensor, Tensor], dict[str, Tensor]]
    states: tuple[str, ...]
    has_step: bool = True  # torch keeps state["step"] (SGD does not)


KINDS = {
    "sgd": Kind(sgd, sgd_scalars, ("momentum_buffer",), has_step=False),
    "momentum": Kind(sgd, sgd_scalars, ("momentum_buffer",), has_step=False),
    "adam": Kind(adam, adam_scalars, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adamw": Kind(adam, adamw_scalars, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "rmsprop": Kind(rmsprop, lr_scalars, ("square_avg", "momentum_buffer", "grad_avg")),
    "adagrad": Kind(adagrad, adagrad_scalars, ("sum",)),
    "adadelta": Kind(adadelta, lr_scalars, ("square_avg", "acc_delta")),
}


def stackable_optimizer(name: str) -> bool:
    """Whether `name` is one of dltrain's seven built-ins (a user's registered optimizer is not)."""
    return name in KINDS and name in TABLE


def full_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A member's options over the YAML preset over the torch class's defaults (sgd's preset has no momentum)."""
    sig = inspect.signature(TABLE[name].cls.__init__).parameters.values()
    torch_defaults = {p.name: p.default for p in sig if p.default is not p.empty}
    merged = {**torch_defaults, **preset(name), **options}
    merged.pop("exclude_bias_and_norm", None)  # applied through `decays`
    return merged


def hyper_parameters(opts: list[dict[str, Any]], device: torch.device) -> dict[str, Tensor]:
    """Each numeric option as a (N,) float64 tensor, betas as beta1 and beta2, and the constants torch derives."""
    table = {k: [float(o[k]) for o in opts] for k in opts[0] if isinstance(opts[0][k], (int, float))
             and not isinstance(opts[0][k], bool)}
    if "betas" in opts[0]:
        table["beta1"], table["beta2"] = ([float(o["betas"][j]) for o in opts] for j in (0, 1))
    h = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in table.items()}
    for k in ("dampening", "beta1", "beta2", "alpha", "rho"):
        if k in h:
            h[f"one_minus_{k}"] = 1 - h[k]  # torch's `1 - beta1` in Python floats
    if "momentum" in h:
        h["has_momentum"] = h["momentum"] != 0
    return h


class StackedOptimizer:
    """Optimizer `name` over the stack's leaf tensors `params` (N, *shape), member m with `options[m]`."""

    def __init__(self, name: str, params: Sequence[Tensor], options: Sequence[Mapping[str, Any]],
                 decays: Sequence[bool]) -> None:
        if not stackable_optimizer(name):
            raise ValueError(f"optim={name} cannot be stacked; stackable: {', '.join(KINDS)}")
        self.name, self.kind, self.params = name, KINDS[name], list(params)
        self.n, self.decays = len(options), [bool(d) for d in decays]
        if len(self.decays) != len(self.params) or any(p.shape[:1] != (self.n,) for p in self.params):
            raise ValueError(f"{len(self.params)} stacked params of {self.n} members need as many decays and "
                             "each a leading dimension of size N")
        self.opts = [full_options(name, o) for o in options]
        for key in BOOLS:
            if key in self.opts[0] and any(o[key] != self.opts[0][key] for o in self.opts):
                raise ValueError(f"optim.{key} differs between the members of a stack: "
                                 f"{[o[key] for o in self.opts]}; it must be equal")
        device = self.params[0].device
        self.h = hyper_parameters(self.opts, device)
        o0, moms = self.opts[0], [float(o.get("momentum", 0.0)) for o in self.opts]
        self.flags = Flags(bool(o0.get("nesterov")), bool(o0.get("amsgrad")), bool(o0.get("centered")),
                           any(m != 0 for m in moms), all(m != 0 for m in moms))
        self.maximize = bool(o0.get("maximize"))
        self.decoupled = name == "adamw"
        self.any_decay = any(float(o["weight_decay"]) != 0 for o in self.opts)
        self.steps = torch.zeros(self.n, dtype=torch.float64, device=device)  # each member's optimizer steps
        self.state = {k: [self.initial(k, p) for p in self.params] for k in self.kind.states if self.keeps(k)}
        self.cache: dict[tuple[str, int, torch.dtype], Tensor] = {}  # constant columns, made once

    def keeps(self, key: str) -> bool:
        """Whether the stack holds state `key` (torch holds it for some member, or always)."""
        return {"momentum_buffer": self.flags.any_momentum, "max_exp_avg_sq": self.flags.amsgrad,
                "grad_avg": self.flags.centered}.get(key, True)

    def initial(self, key: str, p: Tensor) -> Tensor:
        """A fresh state tensor: zeros, Adagrad's sums at each member's initial_accumulator_value."""
        if key == "sum":
            return self.column(self.h["initial_accumulator_value"], p).expand_as(p).clone()
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    @staticmethod
    def column(x: Tensor, p: Tensor) -> Tensor:
        """Per-member (N,) values as a (N, 1, ...) column over p, floats in p's dtype (torch's kernels cast)."""
        x = x.to(p.dtype) if x.is_floating_point() else x
        return x.view(-1, *([1] * (p.ndim - 1)))

    @torch.no_grad()
    def step(self, lr: Tensor, active: Tensor, all_active: bool = False) -> None:
        """One step from each param's .grad; lr (N,) is this step's rate per member (float64 for torch's rounding),
        active (N,) bool. Inactive members keep params, state and step count exactly. `all_active` (the caller
        knows it on the host: no sync) skips the masks: the same values, ~12% of a digits MLP step fewer."""
        lr = lr.to(self.steps.device, torch.float64)
        steps = self.steps + active
        scalars = {**self.kind.scalars(self.h, lr, steps), "active": None if all_active else active}
        step_cache: dict[tuple[str, int, torch.dtype], Tensor] = {}
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.step_param(i, p, scalars, step_cache)
        self.steps = torch.where(active, steps, self.steps)

    def step_param(self, i: int, p: Tensor, scalars: dict[str, Tensor],
                   step_cache: dict[tuple[str, int, torch.dtype], Tensor]) -> None:
        """Param i's update, written where its member is active; `c(key)`: a per-member scalar as a column over p
        (this step's from `scalars`, constants from the options), each made once per step or once ever."""
        def c(key: str) -> Tensor:
            cache, source = (step_cache, scalars) if key in scalars else (self.cache, self.h)
            tag = (key, p.ndim, p.dtype)
            if tag not in cache:
                cache[tag] = self.column(source[key], p)
            return cache[tag]

        g = -p.grad if self.maximize else p.grad
        work = p
        if self.decays[i] and self.any_decay:
            if self.decoupled:
                work = p * c("decoupled")
            else:
                g = torch.addcmul(g, p, c("weight_decay"))
        if scalars["active"] is None and self.kind.update is sgd and not self.flags.any_momentum:
            p.addcmul_(g, c("neg_lr"))  # plain SGD, every member stepping: in place, no new tensor to copy back
            return
        st = {k: v[i] for k, v in self.state.items()}
        new_p, new = self.kind.update(work, g, st, c, self.flags)
        if scalars["active"] is None:
            p.copy_(new_p)
            for k, v in new.items():
                self.state[k][i] = v
            return
        on = c("active")
        p.copy_(torch.where(on, new_p, p))
        for k, v in new.items():
            self.state[k][i] = torch.where(on, v, st[k])

    def member_state(self, i: int, m: int, steps: float, like: Tensor) -> dict[str, Any]:
        """Member m's torch state of param i (empty where torch would hold none yet), as tensors like `like`."""
        if steps == 0 and self.name != "adagrad":  # torch makes state at the first step (Adagrad's at __init__)
            return {}
        has_momentum = float(self.opts[m].get("momentum", 0.0)) != 0
        keys = [k for k in self.state if k != "momentum_buffer" or has_momentum]
        out: dict[str, Any] = {"step": torch.tensor(steps)} if self.kind.has_step else {}
        out.update({k: self.state[k][i][m].detach().to(like.device, like.dtype, copy=True) for k in keys})
        return out

    def export_member(self, member: int, optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> None:
        """Member's state into `optimizer`, a torch optimizer of its kind over the member's own `params` (params[i]
        is its copy of the stacked params[i]); its param groups' options are left as built."""
        steps = float(self.steps[member])  # one host read, outside the per-step path
        for i, p in enumerate(params):
            state = self.member_state(i, member, steps, p)
            optimizer.state.pop(p, None)
            if state:
                optimizer.state[p] = state

    def import_member(self, member: int, optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> None:
        """The reverse: `optimizer`'s state of the member's `params` (none: a fresh run) into slice `member`."""
        steps = 0.0
        for i, p in enumerate(params):
            state = optimizer.state.get(p) or {}
            for k, stacked in self.state.items():
                slot = stacked[i][member]
                if state.get(k) is not None:
                    slot.copy_(state[k])
                else:
                    slot.copy_(self.initial(k, stacked[i])[member])
            if state:  # SGD keeps no step: a momentum buffer means it has stepped
                steps = float(state["step"]) if "step" in state else 1.0
        self.steps[member] = steps
