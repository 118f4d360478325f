"""Where compiled kernels are cached: under a hash of the package's kernel sources.

Numba caches a compiled function next to its source file and checks only
that file's time stamp, so a kernel whose callee (in another file) changed
would run the old callee from the cache. Here every kernel of the package is
cached in a folder named after a hash of every package source file that
defines kernels: editing any of them starts a fresh folder, and whatever
depends on the edit is compiled anew, with nothing to delete by hand.

The folder is `$MGD_EMU_CACHE_DIR`, else `$NUMBA_CACHE_DIR/mgd-emu`, else
`$XDG_CACHE_HOME/mgd-emu` (default ~/.cache/mgd-emu), then `kernels-<hash>`.
Folders of other source versions stay until `mgd-emu cache --prune`
deletes them (`mgd-emu cache` shows their size); a run never deletes any,
since other checkouts may share the cache.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None

from llvmlite import binding as llvm
from numba.core import caching, codegen, inline_closurecall, ir

PACKAGE = Path(__file__).resolve().parent


def kernel_sources() -> list[Path]:
    """The package's source files that define or call compiled kernels."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "numba" in p.read_text(encoding="utf-8"))


def source_hash() -> str:
    h = hashlib.sha256()
    for p in kernel_sources():
        h.update(p.relative_to(PACKAGE).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    if os.environ.get("MGD_EMU_CACHE_DIR"):
        return Path(os.environ["MGD_EMU_CACHE_DIR"])
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "mgd-emu"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mgd-emu"


CACHE_DIR = cache_root() / f"kernels-{source_hash()}"


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def cache_folders() -> list[tuple[Path, int]]:
    """(folder, bytes) of every source version's kernel folder under
    cache_root(), this version's first (when it exists)."""
    root = cache_root()
    found = sorted(p for p in root.glob("kernels-*") if p.is_dir()) if root.is_dir() else []
    found.sort(key=lambda p: p != CACHE_DIR)
    return [(p, _size(p)) for p in found]


def prune_other_versions() -> tuple[int, int]:
    """Delete the kernel folders of every other source version (other
    checkouts of mgd-emu sharing this cache compile theirs again when next
    used); (folders, bytes) deleted. Nothing else in the cache is touched."""
    import shutil

    folders = freed = 0
    for folder, size in cache_folders():
        if folder != CACHE_DIR:
            shutil.rmtree(folder)
            folders, freed = folders + 1, freed + size
    return folders, freed


class KernelCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for the package's own kernels (CACHE_DIR)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        rel = Path(py_file).resolve().relative_to(PACKAGE)
        self._cache_path = str(CACHE_DIR / rel.parent / rel.stem)

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            Path(py_file).resolve().relative_to(PACKAGE)
        except (ValueError, OSError):
            return None  # not ours: numba's own locators decide
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None  # an unwritable cache folder: numba's own locators decide
        return self


# Symbol-name fragments of the kernels compiled in place into their callers.
_INLINED: set[str] = set()


def inline_into_callers(*kernels) -> None:
    """Have LLVM compile these kernels into every kernel that calls them.

    A call to a compiled kernel passes each array of its records as seven
    machine words, on the stack past the sixth: a block kernel called once
    a cycle on a small chip spends more time receiving its arguments than
    working. Numba's own `inline="always"` inlines at the level of its IR
    and retypes the caller, which doubled compile times; marking the callee
    `alwaysinline` when it is linked into a caller costs LLVM little.
    """
    for k in kernels:
        parts = k.py_func.__module__.split(".") + [k.py_func.__qualname__]
        _INLINED.add("_ZN" + "".join(f"{len(p)}{p}" for p in parts) + "B")


_optimize_final_module = getattr(codegen.CPUCodeLibrary, "_optimize_final_module", None)


def _optimize_inlining_marked(library, *args, **kwargs):
    """CPUCodeLibrary._optimize_final_module, after marking every kernel of
    inline_into_callers that was linked into this library (a linked copy
    is linkonce_odr; the kernel's own library keeps it as a function)."""
    if _INLINED:
        marked = tuple(_INLINED)
        for fn in library._final_module.functions:
            if (not fn.is_declaration and fn.linkage == llvm.Linkage.linkonce_odr
                    and fn.name.startswith(marked) and "noinline" not in str(fn.attributes)):
                fn.add_function_attribute("alwaysinline")
    return _optimize_final_module(library, *args, **kwargs)


class _OneMemoPerIR:
    """The `copy` module as Numba's inliner sees it during one inline.

    To inline a kernel marked `inline="always"`, Numba deep-copies the
    callee's IR block by block, each block with a memo of its own, so the
    function's scope (every variable) is copied again for every block:
    quadratic in the callee's size, and a quarter to a third of a fresh
    start. Here the blocks of one IR share one memo, as they share one
    scope: the copy is the same, made once.
    """

    def __init__(self):
        self._memo, self._scope, self._copied = {}, None, set()

    def deepcopy(self, x, memo=None):
        if memo is not None or not isinstance(x, ir.Block):
            return copy.deepcopy(x, memo)
        if x.scope is not self._scope or id(x) in self._copied:  # another IR, or another copy
            self._memo, self._scope, self._copied = {}, x.scope, set()
        self._copied.add(id(x))
        return copy.deepcopy(x, self._memo)

    def __getattr__(self, name):
        return getattr(copy, name)


_inline_ir = getattr(inline_closurecall.InlineWorker, "inline_ir", None)


@functools.cache
def _numba_copies_blocks_apart() -> bool:
    """Whether this Numba's inliner still deep-copies a callee's IR block by
    block, as _OneMemoPerIR assumes (else inlines use Numba's own copy).
    Asked at the first inline, not at import (it reads Numba's source)."""
    import inspect

    try:
        code = inspect.getsource(_inline_ir)
    except (OSError, TypeError):
        return False
    return "copy.deepcopy(the_ir.blocks[block_label])" in code


def _inline_ir_one_memo(worker, *args, **kwargs):
    """InlineWorker.inline_ir with _OneMemoPerIR as its `copy`."""
    if not _numba_copies_blocks_apart():
        return _inline_ir(worker, *args, **kwargs)
    inline_closurecall.copy = _OneMemoPerIR()
    try:
        return _inline_ir(worker, *args, **kwargs)
    finally:
        inline_closurecall.copy = copy


class SafeIndexDataCacheFile(caching.IndexDataCacheFile):
    """Numba's index + data cache files, safe for processes that compile at
    once (a study's workers, two runs started together) in our cache folder.

    Numba's own `save` reads the index, picks the first free data-file name
    and writes both without a lock: two processes saving different kernels
    of one function (two variants' cycle loops) can pick the same name, and
    the index can then send one variant to the other's machine code. Here a
    save holds an exclusive lock on the index while it picks the name and
    writes the data, then the index; each data file also carries its key,
    and a load whose file holds another key compiles afresh. Caches outside
    the package's folder behave as Numba's.
    """

    def _ours(self) -> bool:
        return Path(self._cache_path).is_relative_to(CACHE_DIR)

    @contextlib.contextmanager
    def _locked(self):
        if fcntl is None:
            yield
            return
        with open(self._index_path + ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def save(self, key, data):
        if not self._ours():
            return super().save(key, data)
        with self._locked():
            overloads = self._load_index()
            name = overloads.get(key)
            if name is None:
                taken = set(overloads.values())
                name = next(n for n in map(self._data_name, itertools.count(1)) if n not in taken)
            self._save_data(name, (key, data))
            overloads[key] = name
            self._save_index(overloads)

    def load(self, key):
        if not self._ours():
            return super().load(key)
        name = self._load_index().get(key)
        if name is None:
            return None
        try:
            stored_key, data = self._load_data(name)
        except Exception:  # noqa: BLE001 - missing, partial or foreign: compile afresh
            return None
        return data if stored_key == key else None


def install() -> None:
    """Put the locator first for every kernel decorated from now on, make
    cache saves safe across processes, and let inline_into_callers take
    effect (where this Numba has the hook it needs: else kernels are
    called, slower, and nothing else changes); copy IR once per inline
    (_OneMemoPerIR)."""
    if KernelCacheLocator not in caching.CacheImpl._locator_classes:
        caching.CacheImpl._locator_classes.insert(0, KernelCacheLocator)
    caching.IndexDataCacheFile = SafeIndexDataCacheFile
    if _optimize_final_module is not None:
        codegen.CPUCodeLibrary._optimize_final_module = _optimize_inlining_marked
    if _inline_ir is not None and getattr(inline_closurecall, "copy", None) is copy:
        inline_closurecall.InlineWorker.inline_ir = _inline_ir_one_memo


class KeyedFunctionCache(caching.FunctionCache):
    """The disk cache of a kernel built in a closure, keyed by its code and
    an explicit `key` (Numba's own key pickles the closure's constants, and
    a dispatcher among them pickles differently in every process)."""

    def __init__(self, py_func, key: str):
        super().__init__(py_func)
        self._key = key

    def _index_key(self, sig, codegen):
        code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        return (sig, codegen.magic_tuple(), (code, self._key))


def cached(dispatcher, key: str):
    """Cache a closure-built dispatcher (made without cache=True) on disk under
    `key`, under a symbol name of its own (name_apart)."""
    dispatcher._cache = KeyedFunctionCache(dispatcher.py_func, key)   # its files keep the plain name
    return name_apart(dispatcher, key)


def name_apart(dispatcher, tag: str):
    """Give a kernel built in a closure the symbol name `<qualname>[tag]`,
    `tag` naming what it was built for, before it compiles.

    Numba names a compiled function by its qualified name, its argument
    types and a counter of the process that compiled it. Two closures of one
    function built for different chips, compiled in two processes that
    happened to count alike, got one name; loaded from the disk cache into
    one process, the linker then resolved both to whichever came first, and
    a chip ran another's synapse code (its results then depended on the
    chips run before it in the process). One name must mean one code."""
    dispatcher.py_func.__qualname__ += f"[{tag}]"
    return dispatcher
