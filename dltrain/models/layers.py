"""Shared building blocks of the model families: activations and weight initialization by name."""
from __future__ import annotations

from torch import nn

from dltrain.registry import ConfigError, check

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "gelu", "elu", "identity")
# init scheme -> torch.nn.init function; its own keyword names (mean/std, a/b, val, ...) are init_args.
INITS = {
    "normal": nn.init.normal_,
    "uniform": nn.init.uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
    "kaiming_uniform": nn.init.kaiming_uniform_,
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
    "constant": nn.init.constant_,
}
FAN_BASED = ("xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform")  # need 2-D+ weights


def activation(name: str, slope: float = 0.01) -> nn.Module:
    """A fresh activation module; `slope` is leaky_relu's negative slope."""
    makers = {
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU,
        "leaky_relu": lambda: nn.LeakyReLU(slope), "identity": nn.Identity,
    }
    check(name in makers, f"unknown activation '{name}'; valid: {', '.join(ACTIVATIONS)}")
    return makers[name]()


def check_init(scheme: str, init_args: dict | None = None) -> None:
    """Fail early, with the valid names, on an unknown scheme or argument."""
    import inspect

    check(scheme == "default" or scheme in INITS,
          f"unknown init '{scheme}'; valid: default, {', '.join(INITS)}")
    if scheme != "default" and init_args:
        params = list(inspect.signature(INITS[scheme]).parameters)[1:]
        for key in init_args:
            check(key in params and key != "generator",
                  f"init_args.{key} is not an argument of init={scheme}; valid: {', '.join(p for p in params if p != 'generator')}")


def init_weights(model: nn.Module, scheme: str = "default", init_args: dict | None = None) -> None:
    """Initialize weights of linear/conv/recurrent layers with `scheme`; biases start at zero.

    `default` keeps PyTorch's own initialization (biases included). Norm layers keep weight 1, bias 0.
    """
    check_init(scheme, init_args)
    if scheme == "default":
        return
    fn, kwargs = INITS[scheme], dict(init_args or {})
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
            continue
        for pname, param in module.named_parameters(recurse=False):
            if pname.startswith("bias"):
                nn.init.zeros_(param)
            elif pname.startswith("weight") and (param.dim() >= 2 or scheme not in FAN_BASED):
                try:
                    fn(param, **kwargs)
                except (TypeError, ValueError) as err:
                    raise ConfigError(f"init={scheme} failed on {type(module).__name__}.{pname}: {err}") from None
