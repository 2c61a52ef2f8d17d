"""Mixed precision is chosen in one place: autocast on cuda only, a loss scaler for fp16 only."""

from __future__ import annotations

import pytest
import torch

from mcad_core.errors import McadError
from mcad_core.params import parse_params
from mcad_core.precision import amp_dtype, autocast, grad_scaler


@pytest.mark.parametrize(("device", "precision", "dtype"), [
    ("cpu", "bf16", None), ("cpu", "fp16", None), ("cuda", "fp32", None),
    ("cuda", "bf16", torch.bfloat16), ("cuda:1", "fp16", torch.float16),
])
def test_amp_dtype_only_on_cuda(device, precision, dtype):
    assert amp_dtype(device, precision) == dtype


def test_cpu_runs_fp32_whatever_the_precision():
    with autocast("cpu", "bf16"):
        out = torch.ones(2, 3) @ torch.ones(3, 2)
    assert out.dtype == torch.float32
    assert not grad_scaler("cpu", "fp16").is_enabled()


def test_unknown_precision_is_a_one_line_param_error():
    with pytest.raises(McadError, match="'precision'"):
        parse_params({"precision": "fp8"})
    with pytest.raises(ValueError, match="precision"):
        amp_dtype("cuda", "fp8")
