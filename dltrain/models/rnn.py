"""Recurrent nets (rnn, lstm, gru) for sequence classification/regression and next-token language modelling.

Inputs are tokens (N, T) of dtype long when the data passes `vocab_size` (embedded first), or real-valued
sequences (N, T, F) (or (N, T), read as F = 1). The output is per sequence from the last time step,
(N, num_outputs), or per time step, (N, T, num_outputs), when the data asks for `per_step` (language models).
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from dltrain.core.registry import check
from dltrain.core.rules import Fraction, Positive
from dltrain.models import MODELS
from dltrain.models.layers import Init, check_init_options, init_weights

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceNet(nn.Module):
    def __init__(self, cell: str, features: int, num_outputs: int, hidden_size: int, num_layers: int,
                 bidirectional: bool, dropout: float, vocab_size: int | None, embed_dim: int, per_step: bool,
                 nonlinearity: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim) if vocab_size else None
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = CELLS[cell](embed_dim if vocab_size else features, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional, **extra)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_outputs)
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        elif x.dim() == 2:
            x = x.unsqueeze(-1)  # (N, T) real values: one feature per step
        out, _ = self.rnn(x)  # (N, T, directions * hidden)
        if self.per_step:
            return self.head(out)
        last = out[:, -1]
        if self.rnn.bidirectional:  # the backward direction ends at step 0, having read the whole sequence
            size = self.rnn.hidden_size
            last = torch.cat([out[:, -1, :size], out[:, 0, size:]], dim=-1)
        return self.head(last)


def build_sequence_net(cell: str, in_shape: tuple[int, ...], num_outputs: int, hidden_size: int, num_layers: int,
                       bidirectional: bool, dropout: float, vocab_size: int | None, embed_dim: int, per_step: bool,
                       activation: str, init: str, init_args: dict | None) -> nn.Module:
    check(len(in_shape) in (1, 2), f"model={cell} needs sequences (steps,) or (steps, features); the data gives "
          f"{in_shape} (sequence data: adding, digit_rows, sine, text)")
    check(not per_step or not bidirectional, "model.bidirectional=true would let a language model see the next "
          "token; use bidirectional=false")
    features = 1 if len(in_shape) == 1 else in_shape[1]
    model = SequenceNet(cell, features, num_outputs, hidden_size, num_layers, bidirectional, dropout, vocab_size,
                        embed_dim, per_step, activation)
    init_weights(model, init, init_args)
    return model


def _register(cell: str) -> None:
    @MODELS.register(cell, check=check_init_options)
    def build(*, in_shape: tuple[int, ...], num_outputs: int, hidden_size: Annotated[int, Positive] = 128,
              num_layers: Annotated[int, Positive] = 1, bidirectional: bool = False,
              dropout: Annotated[float, Fraction] = 0.0, embed_dim: Annotated[int, Positive] = 64,
              activation: Literal["tanh", "relu"] = "tanh", init: Init = "default", init_args: dict | None = None,
              vocab_size: int | None = None, per_step: bool = False) -> nn.Module:
        """`activation` applies to the plain rnn only (LSTM/GRU gates have their own); `hidden_size` and `embed_dim`
        (token inputs) are in units."""
        return build_sequence_net(cell, in_shape, num_outputs, hidden_size, num_layers, bidirectional, dropout,
                                  vocab_size, embed_dim, per_step, activation, init, init_args)


for _cell in CELLS:
    _register(_cell)
