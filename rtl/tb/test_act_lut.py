"""cocotb testbench: rtl/mgd_act_lut.v against expected activation codes.

Environment: MGD_ACT (a JSON file: z, the pre-activation codes to apply, and
a, the activation codes expected for them), MGD_REPORT (the JSON report:
checked, first mismatch).
"""
import json
import os
from pathlib import Path

import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def lookup(dut):
    spec = json.loads(Path(os.environ["MGD_ACT"]).read_text())
    width = len(dut.a)
    signed = spec["signed"]
    report = dict(checked=0, mismatch=None)
    for n, (z, want) in enumerate(zip(spec["z"], spec["a"])):
        dut.z.value = z
        await Timer(1, "ns")
        got = int(dut.a.value)
        if signed and got >> (width - 1):
            got -= 1 << width
        if got != want:
            report["mismatch"] = dict(index=n, z=z, expected=want, got=got)
            break
        report["checked"] = n + 1
    Path(os.environ["MGD_REPORT"]).write_text(json.dumps(report) + "\n")
    assert report["mismatch"] is None, report["mismatch"]
