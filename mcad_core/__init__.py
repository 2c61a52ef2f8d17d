"""mcad: Multi-teacher Cross-modal Alignment Distillation as a DVC pipeline.

The torchvision compatibility shim must run before anything imports torchvision
(open_clip, timm and transformers all do), so it is the first thing here.
"""

from mcad_core._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

from mcad_core.errors import McadError  # noqa: E402

__all__ = ["McadError"]
__version__ = "0.1.0"
