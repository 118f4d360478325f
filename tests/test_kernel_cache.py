"""How kernels are compiled and cached (mgd_emu/kernel_cache.py)."""
import os
import re
import subprocess
import sys

import numpy as np
from numba import njit

import mgd_emu  # noqa: F401  (installs the cache locator and the inlining hook)
from mgd_emu.kernel_cache import CACHE_DIR, inline_into_callers, source_hash


# Kernels too large for LLVM to inline on its own judgement: many loops.
def _body(m):
    return "".join(f"""
    for i in range(a.shape[0]):
        s += a[i] * b[i] * {k * m}.0 + c[i] / (d[i] + {k}.0)
        c[i] = s * {k}.5""" for k in range(24))


exec(f"def _called(a, b, c, d):\n    s = 0.0{_body(1)}\n    return s\n"
     f"def _marked(a, b, c, d):\n    s = 0.0{_body(3)}\n    return s\n")
_called, _marked = njit(_nrt=False)(_called), njit(_nrt=False)(_marked)  # noqa: F821
inline_into_callers(_marked)


@njit(_nrt=False)
def _calls_both(a, b, c, d):
    return _called(a, b, c, d) + _marked(a, b, c, d)


def test_a_marked_kernel_is_compiled_into_its_caller_and_an_unmarked_one_is_called():
    x = np.arange(4.0)
    assert np.isfinite(_calls_both(x, x, x.copy(), x + 1.0))
    asm = next(iter(_calls_both.inspect_asm().values()))
    targets = re.findall(r"movabsq\s+\$(\w+),", asm)   # numba calls through a register
    assert any("7_called" in t for t in targets), "the unmarked kernel is called"
    assert not any("7_marked" in t for t in targets), "the marked kernel is compiled in"


def test_the_cache_folder_is_named_after_the_package_kernel_sources():
    assert CACHE_DIR.name == f"kernels-{source_hash()}"


def test_an_edited_kernel_source_gets_a_fresh_cache_folder(tmp_path):
    """A copy of the package with one block edited hashes differently."""
    import shutil

    pkg = tmp_path / "mgd_emu"
    shutil.copytree(os.path.dirname(mgd_emu.__file__), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = "import mgd_emu.kernel_cache as k; print(k.source_hash())"
    before = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout.strip()
    block = pkg / "blocks" / "neuron.py"
    block.write_text(block.read_text() + "\n# edited\n")
    after = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout.strip()
    assert before == source_hash() and after and after != before
