// mgd_lfsr32: the perturbation code generator of one channel.
//
// A 32-bit Galois LFSR, polynomial x^32 + x^22 + x^2 + x + 1 (taps mask
// 32'h80200003), right-shifting: each enabled cycle the bit shifted out
// (the state's lsb) is the next code bit, and when it is 1 the mask is
// xored into the shifted state. Period 2^32 - 1; the state must be nonzero
// (the host loads mgd-emu's per-generator seed). The code p is +A for a 1
// bit and -A for a 0 bit, A = AMPLITUDE (a code of W_P bits).
//
// Registers: state [31:0] (LFSR), p [W_P-1:0] (the perturbation register).
module mgd_lfsr32 #(
    parameter integer           W_P       = 8,
    parameter signed [W_P-1:0]  AMPLITUDE = 2
) (
    input  wire              clk,
    input  wire              load,       // state <= seed, p unchanged
    input  wire [31:0]       seed,
    input  wire              step,       // a new code this cycle (every tau_p)
    output reg  [31:0]       state,
    output reg  [W_P-1:0]    p
);
    wire        bit_out = state[0];
    wire [31:0] shifted = state >> 1;
    always @(posedge clk) begin
        if (load) begin
            state <= seed;
        end else if (step) begin
            state <= bit_out ? (shifted ^ 32'h80200003) : shifted;
            p     <= bit_out ? AMPLITUDE : -AMPLITUDE;
        end
    end
endmodule
