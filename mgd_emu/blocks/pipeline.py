"""Layer gate and slot-tag pipeline.

Every cycle the controller sends a slot into the network with a tag (a
measurement, a baseline, or nothing). Without layer pipelining every layer
sees this cycle's tag; with it a register after each layer carries the tag,
the new-sample bit and the target along with the activity, so layer i sees
the slot that entered i cycles ago and the cost unit the one that entered
n_layers cycles ago. The gate of a layer is 1.0 on a measurement slot (its
perturbations apply), else 0.0.
"""
import numpy as np
from numba import njit

from .declare import Reg, record
from .layout import TAG_MEASURE

REGISTERS = (
    Reg("tag", np.int64, ("n_layers",), "pipelining: the slot tag held after each layer (2 bits)"),
    Reg("new_sample", np.int64, ("n_layers",), "pipelining: the new-sample bit held after each layer"),
    Reg("target", np.float64, ("n_layers", "n_out"), "pipelining: the target held after each layer"),
)
Pipeline = record("Pipeline", REGISTERS, __name__)


@njit(cache=True, _nrt=False, inline="always")
def layer_gate(layer, tag, pipe, pipelined):
    """1.0 when the slot in layer `layer` this cycle is a measurement (the
    perturbations apply), else 0.0: the controller's tag, or with layer
    pipelining the tag held in the stage register before the layer."""
    tag_in = pipe.tag[layer - 1] if pipelined and layer > 0 else tag
    return 1.0 if tag_in == TAG_MEASURE else 0.0


@njit(cache=True, _nrt=False, inline="always")
def pipeline_step(pipe, tag, new_sample, y):
    """Shift the slot entering the network (tag, new-sample bit, target y)
    into the first stage and every stage into the next."""
    last = pipe.tag.shape[0] - 1
    for layer in range(last, 0, -1):
        pipe.tag[layer] = pipe.tag[layer - 1]
        pipe.new_sample[layer] = pipe.new_sample[layer - 1]
        for k in range(pipe.target.shape[1]):
            pipe.target[layer, k] = pipe.target[layer - 1, k]
    pipe.tag[0] = tag
    pipe.new_sample[0] = 1 if new_sample else 0
    for k in range(pipe.target.shape[1]):
        pipe.target[0, k] = y[k]
