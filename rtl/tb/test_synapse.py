"""cocotb testbench: replay an mgd-emu synapse stream (mgd-emu export rtl)
through rtl/mgd_synapse.v, one clock cycle per row, and stop at the first
row whose registers differ from the expected response.

Environment: MGD_VECTORS, the export's synapse/ folder (manifest.json and
the hex files); MGD_REPORT, where to write the JSON report (rows replayed,
seconds, and the first mismatch: row, cycle, segment, case, register,
expected and got codes).
"""
import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import Timer


def read_columns(folder: Path, manifest: dict) -> dict:
    """{column name: [word per row]} (unsigned words, as $readmemh reads them)."""
    return {c["name"]: [int(x, 16) for x in (folder / c["file"]).read_text().split()]
            for c in manifest["stimulus"] + manifest["response"]}


def signed(word: int, width: int, is_signed: bool) -> int:
    return word - (1 << width) if is_signed and word >> (width - 1) else word


@cocotb.test()
async def replay(dut):
    folder = Path(os.environ["MGD_VECTORS"])
    manifest = json.loads((folder / "manifest.json").read_text())
    cols = read_columns(folder, manifest)
    rows = manifest["rows"]
    stim = [(getattr(dut, c["name"]), cols[c["name"]]) for c in manifest["stimulus"]]
    resp = [(c, getattr(dut, c["name"]), cols[c["name"]]) for c in manifest["response"]]
    segments = manifest["segments"]
    for name in ("load_velocity", "load_sr_theta", "load_sr_g", "load_sr_v", "presynaptic"):
        if name not in cols:
            getattr(dut, name).value = 0
    report = dict(vectors=str(folder), rows=rows, replayed=0, mismatch=None)
    dut.clk.value = 0
    t0 = time.perf_counter()
    seg = 0
    for n in range(rows):
        for handle, words in stim:
            handle.value = words[n]
        await Timer(1, "ns")
        dut.clk.value = 1
        await Timer(1, "ns")
        for col, handle, words in resp:
            got = int(handle.value)
            if got != words[n]:
                while seg + 1 < len(segments) and segments[seg + 1]["start"] <= n:
                    seg += 1
                s = segments[seg]
                w, sg = col["width"], col["signed"]
                cycle = None
                if s["kind"] == "run" and n >= s["first_row"]:
                    cycle = s["first_cycle"] + n - s["first_row"]
                report["mismatch"] = dict(row=n, cycle=cycle, segment=seg, case=s["case"], register=col["name"],
                                          expected=signed(words[n], w, sg), got=signed(got, w, sg))
                break
        dut.clk.value = 0
        if report["mismatch"]:
            break
        report["replayed"] = n + 1
    report["seconds"] = time.perf_counter() - t0
    if os.environ.get("MGD_REPORT"):
        Path(os.environ["MGD_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")
    mm = report["mismatch"]
    assert mm is None, (f"row {mm['row']}" + (f" (cycle {mm['cycle']})" if mm["cycle"] is not None else "")
                        + f", segment {mm['segment']} ({mm['case']}): {mm['register']} is {mm['got']}, "
                        f"expected {mm['expected']}")
