"""The model config as a model sees it: `ModelConfig` for `auto_complete_config`, and lookups
in the config dict `initialize` receives."""

from __future__ import annotations

import json


def get_input_config_by_name(model_config: dict, name: str) -> dict | None:
    for entry in model_config.get("input", ()):
        if entry.get("name") == name:
            return entry
    return None


def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
    for entry in model_config.get("output", ()):
        if entry.get("name") == name:
            return entry
    return None


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    policy = model_config.get("model_transaction_policy")
    return bool(policy.get("decoupled", False)) if policy else False


class ModelConfig:
    """The model configuration handed to `auto_complete_config`, with its setters.

    Only max_batch_size, dynamic batching, inputs, outputs and the transaction policy
    can be changed; `as_dict()` gives read access to everything.
    """

    def __init__(self, model_config: str | dict) -> None:
        self._model_config = json.loads(model_config) if isinstance(model_config, str) else model_config
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])
        self._model_config.setdefault("max_batch_size", 0)

    @property
    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def as_dict(self) -> dict:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = int(self._model_config.get("max_batch_size", 0) or 0)
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._name}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but auto-complete-config "
                    f"function for model '{self._name}' tries to set scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict) -> None:  # noqa: A002 (Triton's parameter name)
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict) -> None:
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def _add_tensor(self, kind: str, spec: dict, allowed: tuple[str, ...]) -> None:
        name = spec.get("name", "")
        for key in spec:
            if key not in allowed:
                listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" and '{allowed[-1]}'"
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{self._name}' "
                    f"contains property other than {listed}."
                )
        if "name" not in spec:
            raise ValueError(f"{kind} in auto-complete-config function for model '{self._name}' is missing 'name' property.")
        for required in ("data_type", "dims"):
            if required not in spec:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{self._name}' "
                    f"is missing '{required}' property."
                )
        dims = [int(d) for d in spec["dims"]]
        for existing in self._model_config.setdefault(kind, []):
            if existing.get("name") != name:
                continue
            have_type = existing.get("data_type", "TYPE_INVALID")
            have_dims = [int(d) for d in existing.get("dims", [])]
            if have_type != "TYPE_INVALID" and have_type != spec["data_type"]:
                raise ValueError(
                    f"unable to load model '{self._name}', configuration expects datatype {have_type} "
                    f"for {kind} '{name}', model provides {spec['data_type']}"
                )
            if have_dims and have_dims != dims:
                raise ValueError(
                    f"model '{self._name}', tensor '{name}': the model expects dims {dims} "
                    f"but the model configuration specifies dims {have_dims}"
                )
            if "optional" in spec and "optional" in existing and existing["optional"] != spec["optional"]:
                raise ValueError(
                    f"model '{self._name}', tensor '{name}': the model expects optional {spec['optional']} "
                    f"but the model configuration specifies optional {existing['optional']}"
                )
            existing["data_type"] = spec["data_type"]
            existing["dims"] = dims
            if "optional" in spec:
                existing["optional"] = spec["optional"]
            return
        entry = dict(spec)
        entry["dims"] = dims
        self._model_config[kind].append(entry)

    def set_model_transaction_policy(self, transaction_policy_dict: dict) -> None:
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    f"model transaction property in auto-complete-config function for model "
                    f"'{self._name}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            want = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != want:
                raise ValueError(
                    f"trying to change decoupled property in auto-complete-config for model "
                    f"'{self._name}', which is already set to '{policy['decoupled']}'."
                )
            policy["decoupled"] = want
