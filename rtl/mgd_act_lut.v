// mgd_act_lut: a neuron's nonlinearity as a lookup table (combinational ROM).
//
// z is the neuron's full-precision pre-activation (weighted sum + bias, and
// its perturbation), a signed code of W_Z bits with the layer's Z_FRAC
// fraction bits (mgd-emu's act.vh says which). The table holds the
// activation register's code a = q_act(f(z)) for every z in
// [Z_LO, Z_LO + DEPTH - 1]; below and above it f is constant in the
// activation format, so the first and last entries serve every z there.
// LUT_FILE is mgd-emu's activation_layer<i>.hex ($readmemh, one code per line).
module mgd_act_lut #(
    parameter integer         W_Z      = 24,
    parameter integer         W_A      = 8,
    parameter integer         DEPTH    = 1024,
    parameter signed [W_Z-1:0] Z_LO    = 0,
    parameter                 LUT_FILE = "activation_layer0.hex"
) (
    input  wire signed [W_Z-1:0] z,
    output wire        [W_A-1:0] a
);
    reg [W_A-1:0] rom [0:DEPTH-1];
    initial $readmemh(LUT_FILE, rom);
    wire signed [W_Z+1:0] idx = z - Z_LO;
    assign a = (idx < 0) ? rom[0] : (idx >= DEPTH) ? rom[DEPTH-1] : rom[idx[W_Z:0]];
endmodule
