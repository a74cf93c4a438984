"""Optimizers by short name. Each builder takes the parameters (run time) and its typed hyper-parameters.

Weight decay is an optimizer key: coupled (added to the gradient) for all but adamw, decoupled for adamw.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from dltrain.registry import Registry, check

OPTIMIZERS = Registry("optim")
Params = Iterable[torch.nn.Parameter] | Iterable[dict]


def _check_common(lr: float, weight_decay: float) -> None:
    check(lr >= 0, f"optim.lr={lr} must be >= 0")
    check(weight_decay >= 0, f"optim.weight_decay={weight_decay} must be >= 0")


@OPTIMIZERS.register("sgd")
def sgd(*, params: Params, lr: float = 0.1, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    _check_common(lr, weight_decay)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("momentum")
def momentum(*, params: Params, lr: float = 0.05, momentum: float = 0.9, nesterov: bool = False,
             dampening: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    _check_common(lr, weight_decay)
    check(0.0 <= momentum < 1.0, f"optim.momentum={momentum} must be in [0, 1)")
    check(not nesterov or (momentum > 0 and dampening == 0), "optim.nesterov needs momentum > 0 and dampening = 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, dampening=dampening,
                           weight_decay=weight_decay)


@OPTIMIZERS.register("adagrad")
def adagrad(*, params: Params, lr: float = 0.01, lr_decay: float = 0.0, eps: float = 1e-10,
            initial_accumulator_value: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    _check_common(lr, weight_decay)
    return torch.optim.Adagrad(params, lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                               initial_accumulator_value=initial_accumulator_value)


@OPTIMIZERS.register("rmsprop")
def rmsprop(*, params: Params, lr: float = 0.001, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
            centered: bool = False, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    _check_common(lr, weight_decay)
    check(0.0 <= alpha < 1.0, f"optim.alpha={alpha} must be in [0, 1)")
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                               weight_decay=weight_decay)


@OPTIMIZERS.register("adadelta")
def adadelta(*, params: Params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
             weight_decay: float = 0.0) -> torch.optim.Optimizer:
    _check_common(lr, weight_decay)
    check(0.0 <= rho <= 1.0, f"optim.rho={rho} must be in [0, 1]")
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


def _check_betas(betas: list[float]) -> tuple[float, float]:
    check(len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas), f"optim.betas={betas} must be two values in [0, 1)")
    return betas[0], betas[1]


@OPTIMIZERS.register("adam")
def adam(*, params: Params, lr: float = 0.001, betas: list[float] = (0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0, amsgrad: bool = False) -> torch.optim.Optimizer:
    _check_common(lr, weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=_check_betas(list(betas)), eps=eps, weight_decay=weight_decay,
                            amsgrad=amsgrad)


@OPTIMIZERS.register("adamw")
def adamw(*, params: Params, lr: float = 0.001, betas: list[float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.01, amsgrad: bool = False) -> torch.optim.Optimizer:
    _check_common(lr, weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=_check_betas(list(betas)), eps=eps, weight_decay=weight_decay,
                             amsgrad=amsgrad)
