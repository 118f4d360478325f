// tb_synapse: the cocotb replay harness of mgd_synapse for one exported chip.
//
// Compile with the export's folder on the include path (it holds
// mgd_chip.vh, the `define MGD_* of the chip's synapse). Optional defines:
//   MGD_FAULT  mgd_synapse's fault injection (1 ties round half up,
//              2 saturation limit off by one, 3 stochastic rounding takes
//              the generator's state instead of its output); 0 when absent
//   MGD_DUMP   a waveform file name: dump every signal of the synapse (run
//              vvp with -fst for FST, the format GTKWave reads fastest)
`include "mgd_chip.vh"
`ifndef MGD_FAULT
`define MGD_FAULT 0
`endif
module tb_synapse (
    input  wire                clk,
    input  wire                load,
    input  wire [`MGD_W_TH-1:0] load_theta,
    input  wire [`MGD_W_G-1:0]  load_integrator,
    input  wire [`MGD_W_V-1:0]  load_velocity,
    input  wire [63:0]         load_sr_theta,
    input  wire [63:0]         load_sr_g,
    input  wire [63:0]         load_sr_v,
    input  wire [`MGD_W_C-1:0]  broadcast,
    input  wire                broadcast_valid,
    input  wire [`MGD_W_P-1:0]  perturbation,
    input  wire                gate,
    input  wire [`MGD_W_A-1:0]  presynaptic,
    input  wire                update_edge,
    output wire [`MGD_W_TH-1:0] theta,
    output wire [`MGD_W_G-1:0]  integrator,
    output wire [`MGD_W_V-1:0]  velocity
);
    wire sat_g, sat_theta, sat_v;
    mgd_synapse #(
        .W_C(`MGD_W_C), .F_C(`MGD_F_C), .S_C(`MGD_S_C),
        .W_P(`MGD_W_P), .F_P(`MGD_F_P), .S_P(`MGD_S_P),
        .W_A(`MGD_W_A), .F_A(`MGD_F_A), .S_A(`MGD_S_A),
        .W_K(`MGD_W_K), .F_K(`MGD_F_K), .S_K(`MGD_S_K),
        .W_E(`MGD_W_E), .F_E(`MGD_F_E), .S_E(`MGD_S_E),
        .W_TH(`MGD_W_TH), .F_TH(`MGD_F_TH), .S_TH(`MGD_S_TH), .R_TH(`MGD_R_TH), .O_TH(`MGD_O_TH),
        .W_G(`MGD_W_G), .F_G(`MGD_F_G), .S_G(`MGD_S_G), .R_G(`MGD_R_G), .O_G(`MGD_O_G),
        .W_V(`MGD_W_V), .F_V(`MGD_F_V), .S_V(`MGD_S_V), .R_V(`MGD_R_V), .O_V(`MGD_O_V),
        .NODE(`MGD_NODE), .MOMENTUM(`MGD_MOMENTUM), .DEPTH(`MGD_DEPTH),
        .KAPPA(`MGD_KAPPA), .ETA(`MGD_ETA), .GAMMA(`MGD_GAMMA), .FAULT(`MGD_FAULT)
    ) dut (
        .clk(clk), .load(load), .load_theta(load_theta), .load_g(load_integrator),
        .load_v(load_velocity), .load_sr_theta(load_sr_theta), .load_sr_g(load_sr_g),
        .load_sr_v(load_sr_v), .c(broadcast), .valid(broadcast_valid), .p(perturbation),
        .gate(gate), .a(presynaptic), .update_edge(update_edge),
        .theta(theta), .g(integrator), .v(velocity),
        .sat_g(sat_g), .sat_theta(sat_theta), .sat_v(sat_v)
    );
`ifdef MGD_DUMP
    initial begin
        $dumpfile(`MGD_DUMP);
        $dumpvars(0, tb_synapse);
    end
`endif
endmodule
