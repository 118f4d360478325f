"""cocotb testbench: rtl/mgd_lfsr32.v loaded with one generator's LFSR state
and stepped every cycle must give the emulator's perturbation codes.

Environment: MGD_LFSR (a JSON file: seed, codes = the expected p after each
step), MGD_REPORT (where to write the JSON report: steps, first mismatch).
"""
import json
import os
from pathlib import Path

import cocotb
from cocotb.triggers import Timer


async def edge(dut):
    await Timer(1, "ns")
    dut.clk.value = 1
    await Timer(1, "ns")
    dut.clk.value = 0


@cocotb.test()
async def lfsr_codes(dut):
    spec = json.loads(Path(os.environ["MGD_LFSR"]).read_text())
    width = len(dut.p)
    report = dict(steps=len(spec["codes"]), matched=0, mismatch=None)
    dut.clk.value = 0
    dut.load.value, dut.seed.value, dut.step.value = 1, spec["seed"], 0
    await edge(dut)
    dut.load.value, dut.step.value = 0, 1
    for n, want in enumerate(spec["codes"]):
        await edge(dut)
        got = int(dut.p.value)
        got -= (1 << width) if got >> (width - 1) else 0
        if got != want:
            report["mismatch"] = dict(step=n, expected=want, got=got)
            break
        report["matched"] = n + 1
    Path(os.environ["MGD_REPORT"]).write_text(json.dumps(report) + "\n")
    assert report["mismatch"] is None, report["mismatch"]
