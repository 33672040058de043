"""Export the incremental step for other runtimes: TorchScript and ONNX.

Both exports wrap `IntentGRU.step` (normalization and calibration buffers included):
    inputs  cat (B,3) int64, num (B,Fn) float32, roll (B,Fr) float32, h (B,H) float32
    outputs p (B,) float32, h_new (B,H) float32
with a dynamic batch axis. A session starts from h = zeros(B,H).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from models.gru import IntentGRU

log = logging.getLogger(__name__)

INPUT_NAMES = ["cat", "num", "roll", "h"]
OUTPUT_NAMES = ["p", "h_new"]
ONNX_OPSET = 17


class StepModule(nn.Module):
    """`IntentGRU.step` as a module's forward, which is what exporters trace."""

    def __init__(self, model: IntentGRU):
        super().__init__()
        self.model = model

    def forward(self, cat: torch.Tensor, num: torch.Tensor, roll: torch.Tensor, h: torch.Tensor):
        return self.model.step(cat, num, roll, h)


def example_inputs(model: IntentGRU, batch: int = 2) -> tuple[torch.Tensor, ...]:
    c = model.config
    g = torch.Generator().manual_seed(0)
    cat = torch.stack(
        (
            torch.randint(0, c.n_types, (batch,), generator=g),
            torch.randint(0, c.n_item_buckets, (batch,), generator=g),
            torch.randint(0, c.n_category_buckets, (batch,), generator=g),
        ),
        dim=1,
    )
    return (cat, torch.randn(batch, c.n_numeric, generator=g), torch.randn(batch, c.n_rolling, generator=g),
            torch.randn(batch, c.hidden_size, generator=g) * 0.1)


def export_torchscript(model: IntentGRU, out: str | os.PathLike) -> Path:
    """Traced step function (the step has no data-dependent control flow, so tracing is exact)."""
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about nn.GRU's shape checks (constant for a fixed architecture) and about
        # TorchScript's deprecation; the parity test is what guards correctness.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(StepModule(model), example_inputs(model), check_trace=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out))
    log.info("TorchScript step written to %s", out)
    return out


def export_onnx(model: IntentGRU, out: str | os.PathLike) -> Path:
    """ONNX step function with a dynamic batch axis (TorchScript-based exporter; no onnxscript needed)."""
    model = model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dyn = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # h is an input, so the exporter's batch-size GRU warning does not apply
        torch.onnx.export(
            StepModule(model),
            example_inputs(model),
            str(out),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=dyn,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    log.info("ONNX step written to %s", out)
    return out


def export(model: IntentGRU, fmt: str, out: str | os.PathLike) -> Path:
    if fmt == "torchscript":
        return export_torchscript(model, out)
    if fmt == "onnx":
        return export_onnx(model, out)
    raise ValueError(f"unknown export format {fmt!r} (torchscript, onnx)")
