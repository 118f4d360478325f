"""Same bits: every register of every shipped chip and of a chip per
structural variant of the engine, after 20,001 cycles (and 2,999 more) at a
fixed seed, equals what the engine of commit 5f6dead computed.

The digests were recorded before the engine was restructured
(`python tests/state_digest.py --record`); a change that is meant to keep the
bits must keep this test green without re-recording.
"""
import json

import pytest

from state_digest import GOLDEN, VARIANTS, run_digests

EXPECTED = json.loads(GOLDEN.read_text())


def test_every_variant_has_a_recorded_digest():
    assert set(EXPECTED) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_state_after_20001_cycles_is_bit_identical_to_5f6dead(name):
    got, want = run_digests(name), EXPECTED[name]
    changed = sorted(k for k in want["after"] if got["after"].get(k) != want["after"][k])
    assert not changed, f"{name}: changed after 20,001 cycles: {', '.join(changed)}"
    assert got["continued"] == want["continued"], f"{name}: registers differ 2,999 cycles later"
    assert got["test"] == want["test"], f"{name}: test-set outputs differ"
