"""How config tensor names map to a TorchScript model's forward arguments and results.

Triton's libtorch rules, in order, for inputs:

  FORWARD_ARGUMENT        every input is named after a forward() argument
  NAMED_INDEX             every input is `<name>__<index>` (INPUT__0, INPUT__1, ...): the
                          index is the argument position
  STRICT_CONFIG_ORDERING  otherwise: the config's order is the argument order

and a forward taking one `Dict[str, Tensor]` gets every input in that dict under its name.
Outputs are `<name>__<index>` (OUTPUT__0 is the first element of the returned tuple) or,
failing that, in config order; naiad also maps outputs of a forward that returns a
`Dict[str, Tensor]` by key. Pure logic: nothing here imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from naiad.kernel.inference.errors import InferenceError

log = logging.getLogger("naiad.backends")

FORWARD_ARGUMENT = "FORWARD_ARGUMENT"
NAMED_INDEX = "NAMED_INDEX"
STRICT_CONFIG_ORDERING = "STRICT_CONFIG_ORDERING"
DICT = "DICT"



def named_index(name: str) -> int | None:
    """The index of a `<name>__<index>` tensor name (None when it is not one)."""
    pos = name.find("__")
    if pos < 0:
        return None
    tail = name[pos + 2:]
    return int(tail) if tail.isdigit() else None


@dataclass(frozen=True)
class InputMap:
    convention: str
    positions: dict[str, int]  # config input name -> forward argument position (not DICT)


def map_inputs(model: str, arg_names: Sequence[str], dict_input: bool, config_inputs: Sequence[str]) -> InputMap:
    """Where each config input goes in the forward call; raises with Triton's messages."""
    if not config_inputs:
        raise InferenceError.invalid("model configuration must contain at least one input, none were specified.")
    if dict_input:
        return InputMap(DICT, {})
    if len(arg_names) != len(config_inputs):
        raise InferenceError.invalid(
            f"unable to load model '{model}', configuration expects {len(config_inputs)} inputs, "
            f"model provides {len(arg_names)}")
    if all(n in arg_names for n in config_inputs):
        return InputMap(FORWARD_ARGUMENT, {n: list(arg_names).index(n) for n in config_inputs})
    indices = [named_index(n) for n in config_inputs]
    if all(i is not None for i in indices):
        positions = {n: i for n, i in zip(config_inputs, indices)}  # type: ignore[misc]
        for n, i in positions.items():
            if i >= len(arg_names):
                raise InferenceError.invalid(
                    f"unable to load model '{model}': input '{n}' has index {i}, but forward() takes "
                    f"{len(arg_names)} arguments")
        if len(set(positions.values())) != len(positions):
            raise InferenceError.invalid(f"unable to load model '{model}': two inputs have the same index")
        return InputMap(NAMED_INDEX, positions)
    log.warning(
        "input(s) of model '%s' are neither forward() arguments (%s) nor follow the <name>__<index> naming "
        "convention: falling back to enforcing strict ordering from model configuration",
        model, ", ".join(arg_names))
    return InputMap(STRICT_CONFIG_ORDERING, {n: i for i, n in enumerate(config_inputs)})


@dataclass(frozen=True)
class OutputMap:
    convention: str
    positions: dict[str, int]  # config output name -> index in the returned sequence


def map_outputs(model: str, config_outputs: Sequence[str], dict_output: bool) -> OutputMap:
    if dict_output:
        return OutputMap(DICT, {})
    indices = [named_index(n) for n in config_outputs]
    if config_outputs and all(i is not None for i in indices):
        return OutputMap(NAMED_INDEX, {n: i for n, i in zip(config_outputs, indices)})  # type: ignore[misc]
    if config_outputs:
        log.info("output(s) of model '%s' do not follow the <name>__<index> naming convention: "
                 "the model configuration's order is the order of forward()'s results", model)
    return OutputMap(STRICT_CONFIG_ORDERING, {n: i for i, n in enumerate(config_outputs)})
