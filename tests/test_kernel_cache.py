"""How kernels are compiled and cached (mgd_emu/kernel_cache.py)."""
import os
import re
import subprocess
import sys
from pathlib import Path

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
    ir = next(iter(_calls_both.inspect_llvm().values()))
    callees = re.findall(r"call [^@\n]*@(\w+)\(", ir)
    assert any("7_called" in c for c in callees), "the unmarked kernel is called"
    assert not any("7_marked" in c for c in callees), "the marked kernel is compiled in"



def _branchy(x):
    """A kernel of many blocks and variables (Numba inlines it at its IR level)."""
    y = 0.0
    for i in range(x.shape[0]):
        if x[i] > 1.0:
            y += x[i]
        elif x[i] < -1.0:
            y -= x[i]
        else:
            y += 2.0 * x[i]
    return y


_inlined = njit(_nrt=False, inline="always")(_branchy)


@njit(_nrt=False)
def _inlines_twice(x):
    return _inlined(x) - 0.5 * _inlined(x[::-1])


def test_numba_copies_an_inlined_kernels_ir_once_per_inline_and_the_copy_is_whole(monkeypatch):
    from numba.core import inline_closurecall, ir
    from numba.core.compiler import run_frontend
    from mgd_emu.kernel_cache import _OneMemoPerIR, _inline_ir_one_memo

    assert inline_closurecall.InlineWorker.inline_ir is _inline_ir_one_memo
    copied = []
    deepcopy = _OneMemoPerIR.deepcopy
    monkeypatch.setattr(_OneMemoPerIR, "deepcopy",
                        lambda self, x, memo=None: copied.append(type(x)) or deepcopy(self, x, memo))
    x = np.array([3.0, -2.0, 0.25, 1.0, -1.5])
    assert _inlines_twice(x) == _branchy(x) - 0.5 * _branchy(x[::-1])
    assert copied.count(ir.Block) >= 2 * len(run_frontend(_branchy).blocks), "both inlines copied through it"

    source = run_frontend(_branchy)
    copier = _OneMemoPerIR()
    first = [copier.deepcopy(b) for b in source.blocks.values()]
    again = [copier.deepcopy(b) for b in source.blocks.values()]
    for copies in (first, again):
        scopes = {id(b.scope) for b in copies}
        assert len(scopes) == 1 and id(source.blocks[0].scope) not in scopes, "one new scope per copy"
        assert [str(b) for b in copies] == [str(b) for b in source.blocks.values()]
    assert first[0].scope is not again[0].scope, "a second copy shares nothing with the first"
    def objects(blocks):
        return {id(o) for b in blocks for st in b.body for o in [st, *st.list_vars()]}

    assert not objects(first) & objects(again), "two copies share no statement or variable"
    assert not objects(first) & objects(source.blocks.values()), "nor a copy with its source"

def test_the_package_kernels_are_cached_in_the_folder_named_after_their_sources():
    from mgd_emu.blocks.neuron import neuron_layer

    assert CACHE_DIR.name == f"kernels-{source_hash()}"
    assert Path(neuron_layer._cache._cache_path).is_relative_to(CACHE_DIR)


def test_an_edited_kernel_source_gets_a_fresh_cache_folder(tmp_path):
    """A copy of the package with one block edited hashes differently."""
    import shutil

    pkg = tmp_path / "mgd_emu"
    shutil.copytree(os.path.dirname(mgd_emu.__file__), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = "import mgd_emu.kernel_cache as k; print(k.source_hash())"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MGD_EMU_CACHE_DIR": str(tmp_path / "cache")}
    before = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=env).stdout.strip()
    block = pkg / "blocks" / "neuron.py"
    block.write_text(block.read_text() + "\n# edited\n")
    after = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                           env=env).stdout.strip()
    assert before == source_hash() and after and after != before


def _cache_file(folder):
    from mgd_emu.kernel_cache import SafeIndexDataCacheFile

    return SafeIndexDataCacheFile(str(folder), "cycle_loop", source_stamp="stamp")


def _save_many(folder, worker, n):
    cf = _cache_file(folder)
    for i in range(n):
        cf.save(("variant", worker, i), f"code of {worker}/{i}")


def test_processes_saving_kernels_at_once_never_swap_them(tmp_path, monkeypatch):
    """Numba's own save can give two processes' kernels one data file and
    the index the wrong one; every entry here loads its own code or none."""
    import multiprocessing

    from mgd_emu import kernel_cache

    monkeypatch.setattr(kernel_cache, "CACHE_DIR", tmp_path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_save_many, args=(tmp_path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    cf = _cache_file(tmp_path)
    loaded = {(w, i): cf.load(("variant", w, i)) for w in range(4) for i in range(40)}
    assert all(v == f"code of {w}/{i}" for (w, i), v in loaded.items())   # the lock keeps every entry


def test_a_data_file_that_holds_another_kernel_is_not_loaded(tmp_path, monkeypatch):
    import shutil

    from mgd_emu import kernel_cache

    monkeypatch.setattr(kernel_cache, "CACHE_DIR", tmp_path)
    cf = _cache_file(tmp_path)
    cf.save("variant A", "code of A")
    cf.save("variant B", "code of B")
    shutil.copy(tmp_path / "cycle_loop.1.nbc", tmp_path / "cycle_loop.2.nbc")   # B's file now holds A
    assert cf.load("variant A") == "code of A"
    assert cf.load("variant B") is None      # compiled afresh rather than run as A


def test_mgd_emu_cache_shows_the_folders_and_prune_deletes_only_other_versions(tmp_path):
    """Each source version compiles into a folder of its own; `mgd-emu cache
    --prune` deletes the others' and nothing else."""
    root = tmp_path / "cache"
    current = root / f"kernels-{source_hash()}"
    old = root / "kernels-0123456789abcdef"
    for folder, size in ((current, 300), (old, 5_000_000)):
        (folder / "blocks").mkdir(parents=True)
        (folder / "blocks" / "x.nbc").write_bytes(b"k" * size)
    (root / "notes.txt").write_text("not a kernel folder")
    env = {**os.environ, "MGD_EMU_CACHE_DIR": str(root)}

    def cache(*args):
        done = subprocess.run([sys.executable, "-m", "mgd_emu.cli", "cache", *args], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = cache()
    assert str(root) in shown and "1 folder  5.0 MB" in shown and old.exists()
    assert "deleted 1 folder of other versions, 5.0 MB" in cache("--prune")
    assert not old.exists() and (current / "blocks" / "x.nbc").exists() and (root / "notes.txt").exists()
    assert "0 folders  0.0 MB" in cache()


# Every kernel built in a closure (a cycle kernel per chip variant, the
# general synapse rows per set of rules) compiles with one process-wide count
# in its symbol name; two processes compiling in the same order count alike.
# This makes a process do so: each such kernel gets the number 7.
_COUNT_ALIKE = """
from numba.core import bytecode
from_function = bytecode.FunctionIdentity.from_function.__func__
def counted_alike(cls, func):
    fid = from_function(cls, func)
    if "<locals>" in func.__qualname__:
        fid.unique_id, fid.unique_name = 7, f"{fid.func_qualname}$7"
    return fid
bytecode.FunctionIdentity.from_function = classmethod(counted_alike)
"""
_RUN = """
import hashlib, sys
from mgd_emu import load_chip
from mgd_emu.engine import Emulator
for change in sys.argv[1:]:
    key, value = change.split("=")
    emu = Emulator(load_chip("hw_models/xor_8bit.toml", {key: value}), 5)
    emu.run(2_000)
    print(hashlib.sha256(emu.st.syn.theta.tobytes() + emu.st.syn.G.tobytes()).hexdigest())
"""


def test_chips_compiled_by_different_processes_each_run_their_own_kernel_in_one_process(tmp_path):
    """Two chip variants on the general synapse path (a wrapping integrator,
    an analog one), each compiled and cached by its own process, then both
    loaded into one: each gives the bits it gives alone."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MGD_EMU_CACHE_DIR": str(tmp_path)}

    def run(code, *chips):
        return subprocess.run([sys.executable, "-c", code, *chips], cwd=root, env=env, capture_output=True,
                              text=True, check=True).stdout.split()

    wrap, analog = "formats.integrator.overflow=wrap", "integrator.kind=analog"
    alone = run(_COUNT_ALIKE + _RUN, wrap) + run(_COUNT_ALIKE + _RUN, analog)
    assert run(_RUN, wrap, analog) == alone
