// mgd_synapse: one synapse of an MGD chip with a digital integrator:
// perturbation delay line, correlator, integrator G and updater.
//
// Registers (all codes are two's complement when signed, value = code * 2^-F):
//   theta   [W_TH-1:0]  the parameter (a weight or a bias), F_TH fraction bits
//   g       [W_G-1:0]   the integrator G, F_G fraction bits
//   v       [W_V-1:0]   the momentum register (MOMENTUM = 1), F_V fraction bits
//   pline   DEPTH x [W_P-1:0]  delay line of the applied perturbation gate ? p : 0
//   aline   DEPTH x [W_A-1:0]  delay line of the presynaptic activity a (NODE = 1)
//   sr_theta, sr_g, sr_v [63:0] xorshift64* states of the registers that
//           round stochastically (R_* = 2); each steps once per write.
//
// Each clock edge (load = 0), with p_d, a_d the delay lines' oldest stages
// (this cycle's values when DEPTH = 0):
//   e  = c * p_d * KAPPA            (weight perturbation)
//   e  = c * p_d * KAPPA * a_d      (node perturbation, NODE = 1; a bias has NODE = 0)
//   s  = valid ? q_G(G + e) : G     the integrator accumulates measurements
//   update_edge:                    every tau_theta steps
//     v     <= q_V(GAMMA * v + ETA * s)      (MOMENTUM = 1)
//     theta <= q_TH(theta - v)               (MOMENTUM = 1)
//     theta <= q_TH(theta - ETA * s)         (MOMENTUM = 0)
//     g     <= 0
//   otherwise g <= s.
// Sums and products are formed at full width; q_X is mgd_requant into
// register X's format (R_X rounding, O_X overflow). load = 1 writes theta,
// g, v and the generator states from the load_* ports instead (the delay
// lines still shift). Formats: W_ width, F_ fraction bits, S_ signed;
// c: cost change C~ on the broadcast line, p: perturbation, a: presynaptic
// activity, K: correlator gain KAPPA, E: learning rate ETA and GAMMA.
module mgd_synapse #(
    parameter integer W_C = 12, F_C = 11, S_C = 1,
    parameter integer W_P = 8,  F_P = 7,  S_P = 1,
    parameter integer W_A = 8,  F_A = 8,  S_A = 0,
    parameter integer W_K = 12, F_K = 3,  S_K = 0,
    parameter integer W_E = 12, F_E = 12, S_E = 0,
    parameter integer W_TH = 8,  F_TH = 5,  S_TH = 1, R_TH = 2, O_TH = 0,
    parameter integer W_G  = 16, F_G  = 11, S_G  = 1, R_G  = 1, O_G  = 0,
    parameter integer W_V  = 12, F_V  = 9,  S_V  = 1, R_V  = 1, O_V  = 0,
    parameter integer NODE     = 0,
    parameter integer MOMENTUM = 0,
    parameter integer DEPTH    = 0,
    parameter [W_K-1:0] KAPPA  = 0,
    parameter [W_E-1:0] ETA    = 0,
    parameter [W_E-1:0] GAMMA  = 0,
    parameter integer FAULT    = 0   // fault injection, 0 in a real design: 1, 2 mgd_requant's;
                                     // 3 stochastic rounding takes the generator's state, not its output
) (
    input  wire            clk,
    input  wire            load,
    input  wire [W_TH-1:0] load_theta,
    input  wire [W_G-1:0]  load_g,
    input  wire [W_V-1:0]  load_v,
    input  wire [63:0]     load_sr_theta,
    input  wire [63:0]     load_sr_g,
    input  wire [63:0]     load_sr_v,
    input  wire [W_C-1:0]  c,            // C~ on the broadcast line
    input  wire            valid,        // the broadcast line carries a measurement
    input  wire [W_P-1:0]  p,            // this synapse's (node mode: neuron's) perturbation generator
    input  wire            gate,         // perturbations applied in this cycle
    input  wire [W_A-1:0]  a,            // presynaptic activity (NODE = 1)
    input  wire            update_edge,  // this cycle ends a tau_theta window
    output reg  [W_TH-1:0] theta,
    output reg  [W_G-1:0]  g,
    output reg  [W_V-1:0]  v,
    output wire            sat_g,        // this cycle's writes saturated or wrapped
    output wire            sat_theta,
    output wire            sat_v
);
    // ------------------------------------------------------ delay lines
    localparam integer DL = (DEPTH > 0) ? DEPTH : 1;
    reg  [DL*W_P-1:0] pline;
    reg  [DL*W_A-1:0] aline;
    wire [W_P-1:0] p_now = gate ? p : {W_P{1'b0}};
    wire [W_P-1:0] p_d   = (DEPTH > 0) ? pline[DL*W_P-1 -: W_P] : p_now;
    wire [W_A-1:0] a_d   = (DEPTH > 0) ? aline[DL*W_A-1 -: W_A] : a;

    // ------------------------------------------------------ correlator
    function automatic integer max2(input integer x, input integer y);
        max2 = (x > y) ? x : y;
    endfunction
    localparam integer WA1 = NODE ? W_A + 1 : 2;
    localparam integer FA1 = NODE ? F_A : 0;
    localparam integer WEC = (W_C + 1) + (W_P + 1) + (W_K + 1) + WA1;  // e, full width
    localparam integer FEC = F_C + F_P + F_K + FA1;
    wire signed [W_C:0] c_s = S_C ? {c[W_C-1], c} : {1'b0, c};
    wire signed [W_P:0] p_s = S_P ? {p_d[W_P-1], p_d} : {1'b0, p_d};
    wire signed [W_K:0] k_s = S_K ? {KAPPA[W_K-1], KAPPA} : {1'b0, KAPPA};
    wire signed [WA1-1:0] a_s;
    generate
        if (NODE) begin : g_node
            assign a_s = S_A ? {a_d[W_A-1], a_d} : {1'b0, a_d};
        end else begin : g_weight
            assign a_s = 1;
        end
    endgenerate
    wire signed [WEC-1:0] e = c_s * p_s * k_s * a_s;

    // ------------------------------------------------------ integrator
    localparam integer FX = max2(F_G, FEC);
    localparam integer WX = max2(W_G + 1 + FX - F_G, WEC + FX - FEC) + 1;
    wire signed [W_G:0] g_s = S_G ? {g[W_G-1], g} : {1'b0, g};
    wire signed [WX-1:0] g_sum = (g_s <<< (FX - F_G)) + (e <<< (FX - FEC));
    wire [63:0] sr_g_next, rnd_g, rnd_g_out;
    reg  [63:0] sr_g;
    wire [W_G-1:0] g_q;
    wire sat_g_raw;
    mgd_xorshift64s u_sr_g (.state(sr_g), .next(sr_g_next), .out(rnd_g_out));
    assign rnd_g = (FAULT == 3) ? sr_g_next : rnd_g_out;
    mgd_requant #(.WI(WX), .FI(FX), .WO(W_G), .FO(F_G), .SIGNED(S_G), .ROUNDING(R_G),
                  .OVERFLOW(O_G), .FAULT(FAULT))
        u_q_g (.x(g_sum), .rnd(rnd_g), .y(g_q), .sat(sat_g_raw));
    assign sat_g = sat_g_raw & valid;
    wire [W_G-1:0] s = valid ? g_q : g;

    // ------------------------------------------------------ updater
    wire signed [W_E:0] eta_s = S_E ? {ETA[W_E-1], ETA} : {1'b0, ETA};
    wire signed [W_E:0] gam_s = S_E ? {GAMMA[W_E-1], GAMMA} : {1'b0, GAMMA};
    wire signed [W_G:0] s_s   = S_G ? {s[W_G-1], s} : {1'b0, s};
    localparam integer WS = W_E + W_G + 2;                 // eta * s
    localparam integer FS = F_E + F_G;
    wire signed [WS-1:0] step = eta_s * s_s;

    localparam integer FGV = F_E + F_V;                    // gamma * v + eta * s
    localparam integer WGV = W_E + W_V + 2;
    localparam integer FM  = max2(FGV, FS);
    localparam integer WM  = max2(WGV + FM - FGV, WS + FM - FS) + 1;
    wire signed [W_V:0] v_s = S_V ? {v[W_V-1], v} : {1'b0, v};
    wire signed [WGV-1:0] gv = gam_s * v_s;
    wire signed [WM-1:0] v_sum = (gv <<< (FM - FGV)) + (step <<< (FM - FS));
    wire [63:0] sr_v_next, rnd_v, rnd_v_out;
    reg  [63:0] sr_v;
    wire [W_V-1:0] v_q;
    wire sat_v_raw;
    mgd_xorshift64s u_sr_v (.state(sr_v), .next(sr_v_next), .out(rnd_v_out));
    assign rnd_v = (FAULT == 3) ? sr_v_next : rnd_v_out;
    mgd_requant #(.WI(WM), .FI(FM), .WO(W_V), .FO(F_V), .SIGNED(S_V), .ROUNDING(R_V),
                  .OVERFLOW(O_V), .FAULT(FAULT))
        u_q_v (.x(v_sum), .rnd(rnd_v), .y(v_q), .sat(sat_v_raw));
    assign sat_v = sat_v_raw & update_edge & (MOMENTUM != 0);

    // theta - step, the step being eta * s (plain) or the new v (momentum)
    localparam integer FSTEP = MOMENTUM ? F_V : FS;
    localparam integer WSTEP = MOMENTUM ? W_V + 1 : WS;
    wire signed [W_V:0] vq_s = S_V ? {v_q[W_V-1], v_q} : {1'b0, v_q};
    wire signed [WSTEP-1:0] step_used;
    generate
        if (MOMENTUM) begin : g_momentum
            assign step_used = vq_s;
        end else begin : g_plain
            assign step_used = step;
        end
    endgenerate
    localparam integer FT = max2(F_TH, FSTEP);
    localparam integer WT = max2(W_TH + 1 + FT - F_TH, WSTEP + FT - FSTEP) + 1;
    wire signed [W_TH:0] th_s = S_TH ? {theta[W_TH-1], theta} : {1'b0, theta};
    wire signed [WT-1:0] th_sum = (th_s <<< (FT - F_TH)) - (step_used <<< (FT - FSTEP));
    wire [63:0] sr_theta_next, rnd_theta, rnd_theta_out;
    reg  [63:0] sr_theta;
    wire [W_TH-1:0] th_q;
    wire sat_th_raw;
    mgd_xorshift64s u_sr_theta (.state(sr_theta), .next(sr_theta_next), .out(rnd_theta_out));
    assign rnd_theta = (FAULT == 3) ? sr_theta_next : rnd_theta_out;
    mgd_requant #(.WI(WT), .FI(FT), .WO(W_TH), .FO(F_TH), .SIGNED(S_TH), .ROUNDING(R_TH),
                  .OVERFLOW(O_TH), .FAULT(FAULT))
        u_q_theta (.x(th_sum), .rnd(rnd_theta), .y(th_q), .sat(sat_th_raw));
    assign sat_theta = sat_th_raw & update_edge;

    // ------------------------------------------------------ registers
    always @(posedge clk) begin
        pline <= {pline, p_now};     // DEPTH = 0: unused
        aline <= {aline, a};
        if (load) begin
            theta    <= load_theta;
            g        <= load_g;
            v        <= load_v;
            sr_theta <= load_sr_theta;
            sr_g     <= load_sr_g;
            sr_v     <= load_sr_v;
        end else begin
            if (R_G == 2 && valid)
                sr_g <= sr_g_next;
            if (update_edge) begin
                if (MOMENTUM) begin
                    v <= v_q;
                    if (R_V == 2)
                        sr_v <= sr_v_next;
                end
                theta <= th_q;
                if (R_TH == 2)
                    sr_theta <= sr_theta_next;
                g <= {W_G{1'b0}};
            end else begin
                g <= s;
            end
        end
    end
endmodule
