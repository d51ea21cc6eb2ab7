"""Loading a state dict into a module with one actionable line when it does not fit.

torch's own `load_state_dict` lists every mismatched tensor in a RuntimeError that runs to a hundred lines for a
checkpoint of another architecture (and raises it even with strict=False); this names the counts and one example.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import CliplensError


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str, remedy: str) -> None:
    """Copy `state` into `module`, or refuse with one line when a key is missing or unexpected or a tensor has another
    shape: "`source` does not fit `target`: ...; `remedy`"."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    problems = []
    if reshaped:
        key = reshaped[0]
        problems.append(f"{len(reshaped)} tensor(s) of another shape (e.g. {key}: {list(state[key].shape)} there, "
                        f"{list(expected[key].shape)} here)")
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if problems:
        raise CliplensError(f"{source} does not fit {target}: {'; '.join(problems)}; {remedy}")
    module.load_state_dict(state)
