"""Enumerations the kernels and the chip map share.

Numba sees module-level integers as compile-time constants, so naming the
choices costs nothing at run time. Which chip-description value becomes
which of these is decided in one place: mgd_emu/chipmap.py.
"""

MODE_WEIGHT, MODE_NODE = 0, 1
MUX_TIME, MUX_FREQUENCY, MUX_CODE, MUX_WALSH = 0, 1, 2, 3
BASE_DUAL, BASE_REMEASURE, BASE_HIGHPASS = 0, 1, 2
INTEG_DIGITAL, INTEG_ANALOG = 0, 1
OPT_PLAIN, OPT_MOMENTUM = 0, 1
COST_MSE, COST_XENT = 0, 1
PRE_LIVE, PRE_UNPERTURBED = 0, 1
ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_LINEAR, ACT_HARD_SIGMOID = 0, 1, 2, 3, 4

# Format classes: rows of the chip's format table (fmts) -----------------------
F_INPUT, F_WEIGHT, F_BIAS, F_PERTURBATION, F_ACTIVATION, F_COST = 0, 1, 2, 3, 4, 5
F_COST_CHANGE, F_INTEGRATOR, F_LEARNING_RATE, F_CORRELATOR_GAIN, F_VELOCITY = 6, 7, 8, 9, 10
FORMAT_ORDER = ("input", "weight", "bias", "perturbation", "activation", "cost",
                "cost_change", "integrator", "learning_rate", "correlator_gain", "velocity")

# Slot tags travelling down the pipeline ---------------------------------------
TAG_NONE, TAG_MEASURE, TAG_BASELINE = 0, 1, 2

# Event counter rows: per layer (E_* + E_PER_LAYER * layer), then global rows.
E_WEIGHT, E_BIAS, E_W_INTEG, E_B_INTEG, E_W_VEL, E_B_VEL, E_ACT, E_PERT = range(8)
E_PER_LAYER = 8
E_GLOBAL_INPUT, E_GLOBAL_COST, E_GLOBAL_CHANGE = 0, 1, 2  # offset by E_PER_LAYER * n_layers
LAYER_EVENT_NAMES = ("weight", "bias", "weight_integrator", "bias_integrator",
                     "weight_velocity", "bias_velocity", "activation", "perturbation")
GLOBAL_EVENT_NAMES = ("input", "cost", "cost_change")
