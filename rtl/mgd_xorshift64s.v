// mgd_xorshift64s: one step of the xorshift64* generator (combinational).
//
// Every register element that rounds stochastically owns one 64-bit state
// register (nonzero; loaded by the host with mgd-emu's per-element seed).
// When the register is written, its generator steps once and the step's
// output word feeds mgd_requant's rnd input:
//   s ^= s >> 12;  s ^= s << 25;  s ^= s >> 27;     next = s
//   out = s * 0x2545F4914F6CDD1D  (mod 2^64)
module mgd_xorshift64s (
    input  wire [63:0] state,
    output wire [63:0] next,
    output wire [63:0] out
);
    wire [63:0] a = state ^ (state >> 12);
    wire [63:0] b = a ^ (a << 25);
    assign next = b ^ (b >> 27);
    assign out  = next * 64'h2545F4914F6CDD1D;
endmodule
