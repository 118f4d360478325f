"""Field indices of the packed arrays the compiled cycle loop passes around.

Numba sees module-level integers as compile-time constants, so naming the
fields costs nothing at run time.
"""

# cfg: int64 configuration, fixed at build -----------------------------------
MODE, MUX, BASELINE, INTEGRATOR, OPTIMIZER, PIPELINING = 0, 1, 2, 3, 4, 5
TAU_X, TAU_P, TAU_THETA = 6, 7, 8
N_LAYERS, N_PARAMS, N_GEN, N_NEURONS, N_IN, N_OUT = 9, 10, 11, 12, 13, 14
WALSH_N, COST_FN, PRESYNAPTIC, RING, BCAST_DELAY, N_SAMPLES = 15, 16, 17, 18, 19, 20
HIDDEN_ACT, OUTPUT_ACT, N_INPUTS_TOTAL, FAST_SYNAPSE, PARALLEL = 21, 22, 23, 24, 25
CFG_LEN = 26

MODE_WEIGHT, MODE_NODE = 0, 1
MUX_TIME, MUX_FREQUENCY, MUX_CODE, MUX_WALSH = 0, 1, 2, 3
BASE_DUAL, BASE_REMEASURE, BASE_HIGHPASS = 0, 1, 2
INTEG_DIGITAL, INTEG_ANALOG = 0, 1
OPT_PLAIN, OPT_MOMENTUM = 0, 1
COST_MSE, COST_XENT = 0, 1
PRE_LIVE, PRE_UNPERTURBED = 0, 1
ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_LINEAR, ACT_HARD_SIGMOID = 0, 1, 2, 3, 4

# K: float64 constants, each as its register holds it -------------------------
K_AMPLITUDE, K_KAPPA, K_ETA, K_GAMMA, K_BETA, K_LAMBDA = 0, 1, 2, 3, 4, 5
K_HIGHPASS, K_CHANGE_LIMIT, K_COST_SIGMA, K_WEIGHT_SIGMA, K_ACT_SIGMA = 6, 7, 8, 9, 10
K_LEN = 11

# geometry: int64 [n_layers, GEO_LEN] -------------------------------------------
G_FAN_IN, G_FAN_OUT, G_W_OFF, G_B_OFF, G_N_OFF, G_IN_OFF, G_DELAY, G_GEN_OFF, G_GEN_COUNT = range(9)
GEO_LEN = 9

# ctr: int64 counters (registers of the controller and the sampler) -----------
C_CYCLE, C_STEP, C_CODE, C_NEED_BASELINE, C_POS, C_EPOCH = 0, 1, 2, 3, 4, 5
C_BASELINE_CYCLES, C_SAMPLE, C_UPDATES = 6, 7, 8
CTR_LEN = 9

# cu: float64 cost-unit and broadcast registers -------------------------------
U_COST, U_COST0, U_CHANGE, U_HP_OUT, U_HP_PREV, U_BROADCAST, U_VALID = 0, 1, 2, 3, 4, 5, 6
CU_LEN = 7

# Format classes: rows of the fmts table --------------------------------------
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
