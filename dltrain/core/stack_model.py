"""N models of one architecture as one stacked model (the vectorised launcher, issue 21): every parameter becomes one
tensor (N, *shape) whose slice [m] is member m's, and one forward pass computes all N members with the same kernels
as one (batched matmuls, grouped convolutions), so the number of kernels per step does not grow with N.

Written by hand for the layers dltrain's models are built from (torch.func.vmap over functional_call would do any
model, but measured 1.6x slower on the digits MLP at N = 16: its batching rules copy transposed weights per step).
A model is stackable when it is an nn.Sequential (nested ones too) of: Flatten, Unflatten, Linear, Conv2d,
MaxPool2d, AvgPool2d, Dropout and the element-wise activations; anything else (batch norm, recurrent layers, a
model class with its own forward) is not, and `why_not_stackable` says why in one clause.

Activations travel in one of three layouts: "members first" (N, B, ...) between layers, "features first" (N, F, B)
for linear layers (their weight gradients then come out contiguous: no copy per step), and "grouped"
(B, N*C, H, W) for convolutions and pools (a grouped convolution with groups=N is N convolutions in one kernel).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Identity, nn.SiLU, nn.Softplus)
# the layout each kind of layer computes in (the others: whatever layout comes in)
WANTS = {nn.Linear: "FM", nn.Conv2d: "G", nn.MaxPool2d: "G", nn.AvgPool2d: "G", nn.Flatten: "NB", nn.Unflatten: "NB"}
SHAPING = (nn.Flatten, nn.Unflatten, nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout)


def leaf_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of a (nested) Sequential in forward order."""
    if isinstance(model, nn.Sequential):
        return [layer for child in model for layer in leaf_layers(child)]
    return [model]


def why_not_stackable(model: nn.Module) -> str | None:
    """Why `model` cannot be stacked (one clause), or None."""
    if not isinstance(model, nn.Sequential):
        return f"its model ({type(model).__name__}) has its own forward, which the stack cannot batch"
    for layer in leaf_layers(model):
        if isinstance(layer, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            return f"its model has {type(layer).__name__} layers (normalisation statistics are not stacked)"
        if not isinstance(layer, ELEMENTWISE + SHAPING):
            return f"its model has a {type(layer).__name__} layer, which the stack cannot batch"
        if isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
            return "its model has a Conv2d with padding other than numbers of zeros"
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return "its model flattens other dimensions than all but the batch's"
    if any(b is not None for b in model.buffers()):
        return "its model has buffers (running statistics), which the stack does not hold"
    return None


class StackedModel:
    """`models` (same architecture, each a member's own initial weights) as one model. `params[i]` (N, *shape) is
    the stack of the members' i-th parameter in named_parameters order (leaf tensors: the optimizer's)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.n = len(models)
        shapes = [[tuple(p.shape) for p in m.parameters()] for m in models]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("the members of a stack must have the same parameter shapes")
        self.params = [torch.stack([p.detach() for p in ps]).requires_grad_()
                       for ps in zip(*(m.parameters() for m in models))]
        self.layers = leaf_layers(models[0])  # the architecture; its own weights are never read
        self.slots = self.parameter_slots(models[0])
        self.dropout = [self.rates([leaf_layers(m)[i].p for m in models]) if isinstance(layer, nn.Dropout) else None
                        for i, layer in enumerate(self.layers)]
        self.training = True

    def rates(self, values: list[float]) -> torch.Tensor | None:
        """A dropout layer's rate per member, (N,) on the device; None where every member's is 0 (no dropout)."""
        return torch.tensor(values, device=self.params[0].device) if any(v > 0 for v in values) else None

    def parameter_slots(self, model: nn.Module) -> list[dict[str, int]]:
        """For each layer, the index in `params` of its weight and bias."""
        index = {id(p): i for i, p in enumerate(model.parameters())}
        return [{name: index[id(p)] for name, p in layer.named_parameters(recurse=False)} for layer in self.layers]

    def train(self, mode: bool = True) -> StackedModel:
        self.training = mode
        return self

    def eval(self) -> StackedModel:
        return self.train(False)

    def __call__(self, x: torch.Tensor, classes_first: bool = False) -> torch.Tensor:
        """x: (N, B, *sample_shape) -> (N, B, *output_shape), or (N, outputs, B) with `classes_first` (a net that
        ends in a linear layer gives it without a copy: cross entropy over dim 1 is then 3x faster on a CPU)."""
        layout, fresh = "NB", False  # fresh: x is a linear or conv layer's own output, free to overwrite
        for layer, slots, rates in zip(self.layers, self.slots, self.dropout):
            weight = self.params[slots["weight"]] if "weight" in slots else None
            bias = self.params[slots["bias"]] if "bias" in slots else None
            wanted = WANTS.get(type(layer), layout)
            if wanted != layout:
                x, layout, fresh = self.to_layout(x, layout, wanted), wanted, False
            if fresh and type(layer) is nn.ReLU:  # in place: one activation buffer fewer per layer and step
                x, fresh = torch.relu_(x), False
                continue
            x, fresh = self.apply(layer, x, weight, bias, rates, layout), isinstance(layer, (nn.Linear, nn.Conv2d))
        if classes_first and layout == "FM":
            return x
        if classes_first:
            return self.to_layout(x, layout, "NB").flatten(2).transpose(1, 2)
        return self.to_layout(x, layout, "NB").contiguous()  # the loss and argmax read each sample's row

    def to_layout(self, x: torch.Tensor, have: str, want: str) -> torch.Tensor:
        """Between the layouts: "NB" (N, B, ...), "FM" features first (N, F, B: a linear layer's weight gradient is
        then made contiguous, with no copy per step), "G" grouped (B, N*C, H, W)."""
        if have == want:
            return x
        if have == "G":
            x = x.view(x.shape[0], self.n, -1, *x.shape[2:]).transpose(0, 1)
        elif have == "FM":
            x = x.transpose(1, 2)
        if want == "G":
            return x.transpose(0, 1).flatten(1, 2)
        if want == "FM":
            return x.flatten(2).transpose(1, 2)  # a view for (N, B, F); bmm reads it strided
        return x

    def apply(self, layer: nn.Module, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
              rates: torch.Tensor | None, layout: str) -> torch.Tensor:
        if isinstance(layer, nn.Linear):  # (N, out, in) @ (N, in, B) + (N, out, 1)
            if bias is None:
                return torch.bmm(weight, x)
            return torch.baddbmm(bias.unsqueeze(2), weight, x)
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(x, weight.flatten(0, 1), None if bias is None else bias.flatten(), layer.stride,
                            layer.padding, layer.dilation, layer.groups * self.n)
        if isinstance(layer, nn.Flatten):
            return x.flatten(2)
        if isinstance(layer, nn.Unflatten):
            return x.unflatten(layer.dim + 1, layer.unflattened_size)
        if isinstance(layer, nn.Dropout):
            return self.drop(x, rates, layout == "G")
        return layer(x)  # element-wise activations and pools (pools act per channel: the members' stay apart)

    def drop(self, x: torch.Tensor, rates: torch.Tensor | None, grouped: bool) -> torch.Tensor:
        """Inverted dropout with each member's own rate; masks are drawn independently for every member."""
        if not self.training or rates is None:
            return x
        shape = (1, self.n) if grouped else (self.n, 1)
        view = x.view(x.shape[0], self.n, -1) if grouped else x
        p = rates.view(*shape, *([1] * (view.dim() - 2))).to(x.dtype)
        keep = torch.rand_like(view) >= p
        return (view * keep / (1 - p)).view_as(x)

    @torch.no_grad()
    def store_member(self, member: int, model: nn.Module) -> None:
        """Copy member `member`'s weights into `model` (its ordinary single-run module)."""
        for p, stacked in zip(model.parameters(), self.params):
            p.copy_(stacked[member])

    @torch.no_grad()
    def load_member(self, member: int, model: nn.Module) -> None:
        """The reverse: `model`'s weights into slice `member` (a resumed member, a restored best)."""
        for p, stacked in zip(model.parameters(), self.params):
            stacked[member].copy_(p)
