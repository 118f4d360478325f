"""Study descriptions: a base chip, seeds, a cycle budget and the keys to vary.

    [study]
    chip = "xor_8bit"                  # a chip file (relative to this file or the
                                       # working directory) or a shipped chip's name
    seeds = [0, 1, 2]
    cycles = 200_000                   # the cap per run
    eval_every = 10_000                # test accuracy every N cycles
    targets = [0.9, 1.0]               # record the first cycle each is reached
    stop_at = 1.0                      # optional: end a run once reached

    [set]                              # chip keys fixed for every run
    "optimizer.learning_rate" = 0.05

    [grid]                             # every combination of these
    "formats.weight.frac_bits" = [3, 4, 5]
    "timing.tau_theta" = [1, 4]

    [zip.width]                        # keys varied together: one dimension, "width"
    "network.layers" = [[2, 2, 1], [2, 4, 1]]
    "optimizer.learning_rate" = [0.05, 0.1]

Loading checks everything the study itself decides (keys, types, ranges, that
each grid key is a chip key) and refuses a mistake in one line naming the
file and key, as chip descriptions do. Whether the chip accepts a grid
point's values is decided per point: a refused point is a failed run, the
others go on.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import spec as chip_spec
from ..spec import (FORMAT_CLASSES, FORMAT_KEYS, SCHEMA, Chip, ChipError, load_chip, parse_override,
                    toml_literal)

# Study keys that may sit in [grid] or a [zip] group beside chip keys, but are
# not chip keys: they choose how a point is trained, not what the chip is.
TRAINER = "trainer"
TRAINERS = ("mgd", "backprop")
SECTIONS = ("study", "set", "grid", "zip")
MAX_SEED = 2**63 - 1


class StudyError(ChipError):
    """A study description that cannot be used: "FILE: KEY: message"."""


@dataclass(frozen=True)
class StudyKey:
    name: str
    doc: str
    required: bool = False


STUDY_KEYS = {k.name: k for k in (
    StudyKey("chip", "the base design point: a chip file or a shipped chip's name", True),
    StudyKey("seeds", "chip seeds, each run on every grid point: a list of distinct integers 0..2**63-1", True),
    StudyKey("cycles", "cycles per run at most: a positive integer", True),
    StudyKey("eval_every", "evaluate test accuracy and cost every N cycles: a positive integer"),
    StudyKey("targets", "test accuracies in [0, 1] whose first cycle is recorded"),
    StudyKey("stop_at", "end a run once its test accuracy reaches this, in [0, 1]"),
    StudyKey("checkpoint_every", "checkpoint each run every N cycles (a multiple of eval_every), so a run "
             "retried after its worker died, or resumed, continues instead of starting over"),
    StudyKey("name", "the study's name (default: the file name)"),
    StudyKey("description", "one line: what the study asks"),
)}


@dataclass(frozen=True)
class Dimension:
    """One axis of the grid: a grid key (name = the key), or a zip group
    (name = the group, several keys varied together)."""

    name: str
    keys: tuple[str, ...]
    values: tuple[tuple, ...]   # values[i][k]: key k at position i

    def __len__(self) -> int:
        return len(self.values)

    @property
    def is_zip(self) -> bool:
        return len(self.keys) != 1 or self.keys[0] != self.name


@dataclass(frozen=True)
class Point:
    """One grid point: its index along each dimension and its chip keys."""

    index: tuple[int, ...]
    values: dict

    @property
    def trainer(self) -> str:
        """"mgd" (the chip trains itself) or "backprop" (the baseline, mgd_emu.baseline)."""
        return self.values.get(TRAINER, "mgd")

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={toml_literal(v)}" for k, v in self.values.items()) or "base chip"


@dataclass
class Study:
    """A validated study description."""

    source: str
    name: str
    chip_path: Path
    chip: Chip                    # the base chip with [set] applied
    seeds: list[int]
    cycles: int
    eval_every: int
    targets: list[float]
    stop_at: float | None
    set: dict
    dimensions: list[Dimension]
    description: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    checkpoint_every: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(d) for d in self.dimensions)

    def points(self) -> list[Point]:
        """Every grid point, the first dimension slowest."""
        out = []
        for index in itertools.product(*(range(len(d)) for d in self.dimensions)):
            values = {}
            for d, i in zip(self.dimensions, index):
                values.update(zip(d.keys, d.values[i]))
            out.append(Point(index, values))
        return out

    @property
    def n_runs(self) -> int:
        return math.prod(self.shape) * len(self.seeds)

    def eval_cycles(self) -> list[int]:
        """The cycles at which every run is evaluated (a run that stops early
        has the first few)."""
        out = list(range(self.eval_every, self.cycles, self.eval_every))
        return out + [self.cycles]

    def point_chip(self, point: Point) -> Chip:
        """The chip of a grid point; ChipError when it refuses the values."""
        values = {k: v for k, v in point.values.items() if k != TRAINER}
        return self.chip.replace(values) if values else self.chip

    def to_dict(self) -> dict:
        """The resolved description (what a journal records)."""
        return {
            "source": self.source, "name": self.name, "description": self.description,
            "chip": str(self.chip_path), "base_chip": self.chip.to_toml(), "seeds": self.seeds,
            "cycles": self.cycles, "eval_every": self.eval_every, "targets": self.targets,
            "stop_at": self.stop_at, "set": self.set, "checkpoint_every": self.checkpoint_every,
            "dimensions": [{"name": d.name, "keys": list(d.keys), "values": [list(v) for v in d.values]}
                           for d in self.dimensions],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Study":
        """Back from `to_dict` (a journal's header): the chip comes from the
        recorded TOML, not from the file, which may have changed since."""
        chip = chip_spec.loads_chip(d["base_chip"], d["chip"])
        dims = [Dimension(x["name"], tuple(x["keys"]), tuple(tuple(v) for v in x["values"]))
                for x in d["dimensions"]]
        return cls(d["source"], d["name"], Path(d["chip"]), chip, list(d["seeds"]), d["cycles"], d["eval_every"],
                   list(d["targets"]), d["stop_at"], dict(d["set"]), dims, d.get("description", ""),
                   checkpoint_every=d.get("checkpoint_every"))

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ loading

def load_study(path, overrides: Mapping[str, Any] | None = None) -> Study:
    """Load and validate a study file. `overrides` maps dotted study keys to
    values, as `mgd-emu study --set` does: ``study.cycles``, ``grid.KEY``,
    ``zip.GROUP.KEY``, ``set.KEY`` (KEY a dotted chip key)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(source, "", "no such file") from None
    except IsADirectoryError:
        raise StudyError(source, "", "is a directory, not a study description") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(source, "", f"cannot be read ({exc})") from None
    return loads_study(text, source, overrides, base=path.parent)


def loads_study(text: str, source: str = "<study>", overrides=None, base: Path | None = None) -> Study:
    """A study from TOML text; relative chip paths resolve against `base`
    (default: the working directory)."""
    try:
        raw = chip_spec.parse_toml(text, source)
    except ChipError as err:
        raise StudyError(source, "", err.message) from None
    raw.setdefault("study", {})
    if isinstance(raw["study"], dict) and source.endswith(".toml"):
        raw["study"].setdefault("name", Path(source).stem)
    items = list((overrides or {}).items())
    merged = _apply_overrides(raw, items, source)
    try:
        return _validate(merged, source, base)
    except StudyError as err:
        blamed = [(k, v) for k, v in items if err.key and (err.key == k or err.key.startswith(k + ".")
                                                            or k.startswith(err.key + "."))]
        if blamed:
            k, v = blamed[0]
            raise StudyError(source, err.key, err.message, f"--set {k}={toml_literal(v)}") from None
        raise


def parse_study_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for a study key (value a TOML literal or a bare word)."""
    if "=" not in item:
        raise StudyError("--set", item, "expected KEY=VALUE, e.g. study.cycles=50000 or grid.timing.tau_theta=[1,4]")
    return parse_override(item)


def _apply_overrides(raw: dict, items, source: str) -> dict:
    raw = copy.deepcopy(raw)
    for dotted, value in items:
        section, _, rest = dotted.partition(".")
        where = f"--set {dotted}={toml_literal(value)}"
        if section not in SECTIONS or not rest:
            hint = (f"; a chip key goes under set., e.g. set.{dotted}" if section in SCHEMA else "")
            raise StudyError(source, dotted, f"a study key is study.KEY, set.CHIP_KEY, grid.CHIP_KEY or "
                             f"zip.GROUP.CHIP_KEY{hint}", where)
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise StudyError(source, section, "must be a table", where)
        if section == "zip":
            group, _, key = rest.partition(".")
            if not key:
                raise StudyError(source, dotted, "a zip key is zip.GROUP.CHIP_KEY", where)
            table = table.setdefault(group, {})
            if not isinstance(table, dict):
                raise StudyError(source, f"zip.{group}", "must be a table of chip keys", where)
            rest = key
        if section == "study":
            table[rest] = value
        else:
            # a dotted chip key may also sit nested (unquoted) in the file: replace it as one key
            _drop_nested(table, rest)
            table[rest] = value
    return raw


def _drop_nested(table: dict, dotted: str) -> None:
    parts = dotted.split(".")
    node = table
    for p in parts[:-1]:
        node = node.get(p)
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


def _flatten(table: Mapping, err, section: str, prefix: str = "", out=None) -> dict:
    """Dotted keys of a chip-key table: quoted ("timing.tau_x") or nested
    (timing.tau_x unquoted) alike, down to single values. A format table
    stays whole, replacing the chip's format, when given under one quoted key
    ("formats.weight" = { ... }) or, nested, when it names its `kind` (as a
    chip file writes a format: formats.weight = { kind = "fixed", ... });
    otherwise its keys are keys like any other (formats.weight.frac_bits = 4
    sets only that). TOML reads the unquoted forms alike, hence the rule. A
    key given twice is refused."""
    out = {} if out is None else out
    for k, v in table.items():
        key = f"{prefix}{k}"
        parts = key.split(".")
        whole_format = (len(parts) == 2 and parts[0] == "formats"
                        and (not prefix or (isinstance(v, Mapping) and "kind" in v)))
        if isinstance(v, Mapping) and not whole_format:
            _flatten(v, err, section, key + ".", out)
        elif key in out:
            raise err(f"{section}.{key}", "is given twice (quoted and nested?); a key is set in one place")
        else:
            out[key] = v
    return out


def _overlap(key: str, other: str) -> bool:
    """Whether one of the dotted keys holds the other (formats.weight holds formats.weight.frac_bits)."""
    return key.startswith(other + ".") or other.startswith(key + ".")


# Names of the results' variables and dimensions (results.to_dataset), which a zip group cannot take.
RESULT_NAMES = frozenset({
    "seed", "evaluation", "cycle", "target", "register", "accuracy", "cost", "cycles_to_target",
    "chip_time_to_target", "saturations", "wraps", "status", "error", "run_id", "worker", "saturation_warning",
    "n_parameters", "chip_hash", "final_accuracy", "final_cost", "cycles_run", "chip_time_s", "wall_s",
    "startup_s", "cycles_per_s"})


def chip_key_problem(key: str) -> str | None:
    """Why `key` is not a dotted chip key (None: it is one)."""
    parts = key.split(".")
    if any(not p for p in parts) or len(parts) < 2:
        return "not a dotted chip key such as timing.tau_theta"
    section = parts[0]
    if section not in SCHEMA:
        return "unknown chip section" + _hint(section, SCHEMA)
    if section == "task":
        return None if len(parts) == 2 else "not a chip key (task keys are task.NAME)"
    if section == "formats":
        if parts[1] not in FORMAT_CLASSES:
            return "unknown number format class" + _hint(parts[1], FORMAT_CLASSES)
        if len(parts) == 3 and parts[2] not in FORMAT_KEYS:
            return "unknown format key" + _hint(parts[2], FORMAT_KEYS)
        return None if len(parts) <= 3 else "not a chip key"
    names = [k.name for k in SCHEMA[section][1]]
    if len(parts) != 2 or parts[1] not in names:
        return f"unknown key of [{section}]" + _hint(parts[1], names)
    return None


def _trainer_problem(values) -> str | None:
    """Why `values` are not a list of trainers (None: they are)."""
    if isinstance(values, list) and all(isinstance(v, str) and v in TRAINERS for v in values):
        return None
    return (f"must be a list of trainers, each {' or '.join(map(repr, TRAINERS))} (mgd: the chip trains "
            f"itself; backprop: the exact-gradient baseline on the same network), got {values!r}")


def _hint(word, allowed) -> str:
    close = difflib.get_close_matches(str(word), list(allowed), n=1)
    return (f"; did you mean '{close[0]}'?" if close else "") + f" (allowed: {', '.join(allowed)})"


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _find_chip(name: str, base: Path | None) -> Path:
    p = Path(name)
    candidates = [p] if p.is_absolute() else [*( [base / p] if base is not None else []), p]
    shipped = chip_spec.shipped_chip(name)
    if shipped is not None:
        candidates.append(shipped)
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def _validate(raw: dict, source: str, base: Path | None) -> Study:
    err = lambda key, msg: StudyError(source, key, msg)
    for section in raw:
        if section not in SECTIONS:
            raise err(section, "unknown section" + _hint(section, SECTIONS))
    for section in SECTIONS:
        if section in raw and not isinstance(raw[section], dict):
            raise err(section, f"must be a table ([{section}])")
    st = raw.get("study", {})
    for key in st:
        if key not in STUDY_KEYS:
            raise err(f"study.{key}", "unknown key" + _hint(key, STUDY_KEYS))
    for key in STUDY_KEYS.values():
        if key.required and key.name not in st:
            raise err(f"study.{key.name}", f"missing: {key.doc}")

    chip_name = st["chip"]
    if not isinstance(chip_name, str) or not chip_name:
        raise err("study.chip", f"must be {STUDY_KEYS['chip'].doc}, got {chip_name!r}")
    seeds = st["seeds"]
    if (not isinstance(seeds, list) or not seeds or not all(_int(s) and 0 <= s <= MAX_SEED for s in seeds)):
        raise err("study.seeds", f"must be a non-empty list of integers 0..2**63-1, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise err("study.seeds", f"has a seed twice: {seeds!r}")
    cycles = st["cycles"]
    if not _int(cycles) or cycles <= 0:
        raise err("study.cycles", f"must be a positive integer, got {cycles!r}")
    every = st.get("eval_every", min(cycles, 10_000))
    if not _int(every) or every <= 0:
        raise err("study.eval_every", f"must be a positive integer, got {every!r}")
    if every > cycles:
        raise err("study.eval_every", f"must be at most study.cycles ({cycles:,}), got {every:,}")
    if cycles // every > 100_000:
        raise err("study.eval_every", f"gives {cycles // every:,} evaluations per run; at most 100,000 "
                  f"(raise eval_every to {math.ceil(cycles / 100_000):,} or more)")
    targets = st.get("targets", [1.0])
    if not isinstance(targets, list) or not targets or not all(_number(t) and 0 <= t <= 1 for t in targets):
        raise err("study.targets", f"must be a non-empty list of test accuracies in [0, 1], got {targets!r}")
    if len(set(targets)) != len(targets):
        raise err("study.targets", f"has a target twice: {targets!r}")
    ck_every = st.get("checkpoint_every")
    if ck_every is not None and (not _int(ck_every) or ck_every <= 0 or ck_every % every):
        raise err("study.checkpoint_every", f"must be a positive multiple of study.eval_every ({every:,}), "
                  f"got {ck_every!r}")
    stop_at = st.get("stop_at")
    if stop_at is not None and not (_number(stop_at) and 0 <= stop_at <= 1):
        raise err("study.stop_at", f"must be a test accuracy in [0, 1], got {stop_at!r}")
    name = st.get("name", "study")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise err("study.name", f"must be a non-empty name without '/', got {name!r}")
    description = st.get("description", "")
    if not isinstance(description, str):
        raise err("study.description", f"must be a string, got {description!r}")

    fixed = _flatten(raw.get("set", {}), err, "set")
    for n, key in enumerate(fixed):
        for other in list(fixed)[:n]:   # a key inside a table set before it is applied after it: fine
            if other.startswith(key + "."):
                raise err(f"set.{key}", f"sets the whole table after set.{other}, one of its keys, and would undo "
                          "it: give that key inside the table, or after it")
        if key == TRAINER:
            raise err(f"set.{key}", "is chosen per grid point: put it in [grid] or a [zip] group, "
                      'e.g. [grid] trainer = ["mgd", "backprop"]')
        problem = chip_key_problem(key)
        if problem:
            raise err(f"set.{key}", problem)
    dims: list[Dimension] = []
    seen: dict[str, str] = {f"{k}": "set" for k in fixed}
    for key, values in _flatten(raw.get("grid", {}), err, "grid").items():
        where = f"grid.{key}"
        problem = _trainer_problem(values) if key == TRAINER else chip_key_problem(key)
        if problem:
            raise err(where, problem)
        _check_values(err, where, values)
        _check_varied(err, where, key, seen)
        seen[key] = "grid"
        dims.append(Dimension(key, (key,), tuple((v,) for v in values)))
    zips = raw.get("zip", {})
    for group, table in zips.items():
        if not isinstance(table, dict):
            raise err(f"zip.{group}", "must be a table of chip keys, each with a list of values, "
                      f"e.g. [zip.{group}] \"network.layers\" = [[2, 2, 1], [2, 4, 1]]")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", group):
            raise err(f"zip.{group}", "a group name is a word: letters, digits, '_' and '-', starting with a "
                      "letter or '_'")
        if group in seen or group in SCHEMA or group in RESULT_NAMES or group == TRAINER:
            raise err(f"zip.{group}", "this group name is taken (a chip section, a key, or a variable or "
                      "dimension of the results); choose another")
        flat = _flatten(table, err, f"zip.{group}")
        if not flat:
            raise err(f"zip.{group}", "has no keys")
        n = None
        for key, values in flat.items():
            where = f"zip.{group}.{key}"
            problem = _trainer_problem(values) if key == TRAINER else chip_key_problem(key)
            if problem:
                raise err(where, problem)
            _check_values(err, where, values, unique=False)
            if n is not None and len(values) != n:
                raise err(where, f"has {len(values)} values; the other keys of [zip.{group}] have {n} "
                          "(zipped keys vary together, value by value)")
            n = len(values)
            _check_varied(err, where, key, seen)
            seen[key] = f"zip.{group}"
        rows = tuple(zip(*flat.values()))
        if len(set(map(_canon, rows))) != len(rows):
            raise err(f"zip.{group}", "has the same combination of values twice")
        dims.append(Dimension(group, tuple(flat), rows))

    chip_path = _find_chip(chip_name, base)
    try:
        chip = load_chip(chip_path, fixed)
    except ChipError as exc:
        # blame [set] (and so a --set of it) only where the chip's error lies in one of its keys
        ours = exc.key and any(exc.key == k or exc.key.startswith(k + ".") or k.startswith(exc.key + ".")
                               for k in fixed)
        raise err(f"set.{exc.key}" if ours else "study.chip", f"the base chip is refused: {exc}") from None
    return Study(source, name, chip_path, chip, list(seeds), cycles, every, [float(t) for t in targets],
                 None if stop_at is None else float(stop_at), fixed, dims, description, raw, ck_every)


def _check_varied(err, where: str, key: str, seen: dict) -> None:
    """A key a grid or zip group varies, against the keys given before it
    (seen: key -> "set", "grid" or "zip.GROUP"): each key in one place, and
    never a table and one of its own keys both varied, or a table varied
    whole that [set] gives one key of. (A key varied inside a table that
    [set] gives whole is fine: the point's value goes into that table.)"""
    if key in seen:
        raise err(where, f"is also in [{seen[key]}]; a key is set in one place")
    for other, section in seen.items():
        if not _overlap(key, other) or (section == "set" and key.startswith(other + ".")):
            continue
        if section == "set":
            raise err(where, f"varies the whole table, which would undo {other} in [set]: give that key in the "
                      "grid's tables instead")
        raise err(where, f"and {other} in [{section}] both vary one table: vary the whole table, or only its keys")


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True)


def _check_values(err, where, values, unique=True):
    if not isinstance(values, list) or not values:
        raise err(where, f"must be a non-empty list of values, got {values!r}")
    if unique and len({_canon(v) for v in values}) != len(values):
        raise err(where, f"has a value twice: {values!r}")
