"""Make torchvision importable beside the CPU-only torch wheel.

PyPI's torchvision 0.28.0 is a CUDA build. Beside ``torch 2.13.0+cpu`` its C++
extension does not load, and its Python side then fails at import with
``RuntimeError: operator torchvision::nms does not exist`` because it registers
fake (meta) kernels for ``nms``/``qnms`` unconditionally. open_clip, timm and
transformers import torchvision, so without this nothing model-related loads.
Defining the two operator schemas lets the import finish; only torchvision's C++
ops (nms, roi_align) stay unavailable, and nothing in mcad uses them.
"""

from __future__ import annotations

import sys

_MISSING_OP = "operator torchvision::nms does not exist"
_FRAGMENT = None  # keeps the torch.library registration alive for the process


def ensure_torchvision_importable() -> None:
    """Import torchvision, patching the missing operator schemas if needed.

    A no-op where torchvision is absent or imports normally. Costs one torch
    import (~1.6 s) only when torchvision is installed, which it always is here.
    """
    global _FRAGMENT
    if "torchvision" in sys.modules and "torchvision.ops" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        return
    except RuntimeError as err:
        if _MISSING_OP not in str(err):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    _FRAGMENT = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        _FRAGMENT.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811
