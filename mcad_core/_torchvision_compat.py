"""Make torchvision importable beside the CPU-only torch wheel.

PyPI's torchvision 0.28.0 is a CUDA build. Beside ``torch 2.13.0+cpu`` its C++
extension does not load, and its Python side then fails at import with
``RuntimeError: operator torchvision::nms does not exist`` because it registers
fake (meta) kernels for ``nms``/``qnms`` unconditionally. open_clip, timm and
transformers import torchvision, so without this nothing model-related loads.
Defining the two operator schemas lets the import finish; only torchvision's C++
ops (nms, roi_align) stay unavailable, and nothing in mcad uses them.

``import mcad_core`` only installs :class:`_PatchOnImport`, which applies the fix at
the moment something first imports torchvision. So the torch-free parts (the
``mcad`` album command, the benchmark's search process) start without torch
(~0.2 s instead of ~3 s), and everything else still gets a working torchvision.

When it can go: as soon as ``import torchvision`` works beside the pinned torch without it (a CPU
build of torchvision for that torch, or torch and torchvision from one CUDA index, as on a GPU
machine). ``tests/test_torchvision_compat.py`` says so: its check that the hook is still needed
skips, naming this file, once a plain import succeeds. Then delete this module and its two lines
in ``mcad_core/__init__.py`` (docs/ENVIRONMENT.md, "torchvision on a CPU-only torch").
"""

from __future__ import annotations

import importlib.abc
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

_MISSING_OP = "operator torchvision::nms does not exist"
_FRAGMENT = None  # keeps the torch.library registration alive for the process


def _drop_torchvision_submodules() -> None:
    """Forget the submodules a failed first run of torchvision's ``__init__`` left half-imported."""
    for name in [n for n in sys.modules if n.startswith("torchvision.")]:
        del sys.modules[name]


def _define_missing_ops() -> None:
    global _FRAGMENT
    import torch

    _FRAGMENT = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        _FRAGMENT.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _RetryingLoader(importlib.abc.Loader):
    """torchvision's own loader; on the missing-op error: define the ops, drop the half-imported
    submodules and run torchvision's ``__init__`` again in the same module object."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # look like a plain import
        try:
            self._loader.exec_module(module)
        except RuntimeError as err:
            if _MISSING_OP not in str(err):
                raise
            _drop_torchvision_submodules()
            _define_missing_ops()
            self._loader.exec_module(module)
        remove_import_hook()


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds torchvision through the other finders and hands it the retrying loader. It stays
    installed until torchvision is loaded: ``importlib.util.find_spec`` probes (transformers
    makes them) find the module without loading it."""

    def find_spec(self, name: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "torchvision":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RetryingLoader(spec.loader)
                return spec
        return None


_HOOK = _PatchOnImport()


def install_import_hook() -> None:
    """Patch torchvision when (and only if) something imports it; see the module doc."""
    if "torchvision" not in sys.modules and _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def remove_import_hook() -> None:
    """Stop patching: once torchvision is loaded, or for a test that wants the plain import."""
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
