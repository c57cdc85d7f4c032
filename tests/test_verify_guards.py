"""fitcheck verify runs a load: a plan file from elsewhere must not make it run repo code or
unpickle weights without the user saying so, and a malformed plan file fails before anything runs."""

from __future__ import annotations

import json

import pytest

from planner.core.errors import VerifyError
from planner.report.verify import verify_plan_text

_LOAD = {"auto_class": "AutoModelForCausalLM", "model": "org/m", "revision": "main", "dtype": "bfloat16", "device_map": {"": "cpu"},
         "max_memory": {"cpu": 1}, "offload_folder": None, "bitsandbytes": None, "use_safetensors": True, "trust_remote_code": False,
         "exec_device": "cpu", "packages": ["torch"]}
_PLAN = {"load": _LOAD, "generate": {"context": 8, "batch": 1, "new_tokens": 1}, "predicted": {}}


def _with(**load) -> str:
    return json.dumps({**_PLAN, "load": {**_LOAD, **load}})


def test_remote_code_needs_the_flag() -> None:
    with pytest.raises(VerifyError, match="code from the model repo") as e:
        verify_plan_text(_with(trust_remote_code=True))
    assert "--trust-remote-code" in e.value.hint


def test_pickled_weights_need_the_flag() -> None:
    with pytest.raises(VerifyError, match="unpickling") as e:
        verify_plan_text(_with(pickled_weights=True))
    assert "--allow-pickle" in e.value.hint


@pytest.mark.parametrize("text", ["not json", "[]", json.dumps({"load": {}}), _with(auto_class="os.system"), _with(dtype="float64"),
                                  json.dumps({**_PLAN, "load": {}})])
def test_malformed_plan_files_fail_before_any_load(text: str) -> None:
    with pytest.raises(VerifyError):
        verify_plan_text(text)
