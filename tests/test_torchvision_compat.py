"""The torchvision import hook (mcad_core/_torchvision_compat.py): importing mcad_core loads no torch,
torchvision then imports and works, and the hook is still needed here (or the test says it can go).
Each check runs in a fresh interpreter: the test process has long imported torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest

MISSING_OP = "operator torchvision::nms does not exist"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_mcad_core_loads_no_torch_and_then_torchvision_works():
    proc = run(
        "import sys, mcad_core\n"
        "from mcad_core._torchvision_compat import _HOOK\n"
        "assert 'torch' not in sys.modules and _HOOK in sys.meta_path\n"
        "import torch, torchvision\n"
        "from torchvision.transforms import Normalize\n"
        "x = Normalize([0.5] * 3, [0.5] * 3)(torch.ones(3, 2, 2))\n"
        "assert float(x.mean()) == 1.0 and _HOOK not in sys.meta_path\n"
        "print('ok')\n")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_find_spec_probe_leaves_the_hook_in_place():
    # transformers probes with find_spec before importing; the hook must survive until the import.
    proc = run(
        "import importlib.util, sys, mcad_core\n"
        "from mcad_core._torchvision_compat import _HOOK\n"
        "assert importlib.util.find_spec('torchvision') is not None and _HOOK in sys.meta_path\n"
        "import torchvision.transforms\n"
        "print('ok')\n")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_hook_is_still_needed():
    """When this skips, torchvision imports beside the installed torch on its own: delete
    mcad_core/_torchvision_compat.py and its two lines in mcad_core/__init__.py."""
    proc = run("import torch, torchvision")
    if proc.returncode == 0:
        pytest.skip("torchvision imports without the hook: mcad_core/_torchvision_compat.py can go")
    assert MISSING_OP in proc.stderr, proc.stderr[-2000:]
