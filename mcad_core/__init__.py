"""mcad: Multi-teacher Cross-modal Alignment Distillation as a DVC pipeline.

The torchvision compatibility shim must run before anything imports torchvision
(open_clip, timm and transformers all do), so its import hook is installed first thing
here; it patches torchvision when something imports it, so importing mcad_core alone
loads no torch (the ``mcad`` album command and the search benchmark run without it).
"""

from mcad_core._torchvision_compat import install_import_hook

install_import_hook()

from mcad_core.errors import McadError  # noqa: E402

__all__ = ["McadError"]
__version__ = "0.1.0"
