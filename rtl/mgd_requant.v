// mgd_requant: write a full-width fixed-point value into a register format.
//
// Combinational. The input x is a signed two's-complement value of WI bits
// with FI fraction bits (value = x * 2^-FI). The output y is the code of a
// register of WO bits with FO fraction bits, signed (SIGNED = 1) or
// unsigned, after rounding and overflow, exactly as mgd-emu quantises:
//
//   D = FI - FO fraction bits are dropped (D <= 0: exact left shift).
//   q = floor(x / 2^D), low = x mod 2^D (the dropped bits, 0 .. 2^D-1).
//   ROUNDING 0 truncate      q (toward minus infinity, as a shift)
//            1 nearest-even  q + 1 iff low > 2^(D-1), or low = 2^(D-1) and q odd
//            2 stochastic    q + 1 iff rnd[63:64-D] < low  (rnd: the 64-bit
//                            xorshift64* output of this register element;
//                            P(up) = low / 2^D exactly)
//   OVERFLOW 0 saturate      clamp to [LO, HI]; sat = 1 when clamped
//            1 wrap          keep the low WO bits (two's complement); sat = 1
//                            when the value wrapped
//   LO = -2^(WO-1), HI = 2^(WO-1) - 1 (signed); LO = 0, HI = 2^WO - 1 (unsigned).
//
// FAULT injects a known design error, for proving that test vectors catch
// it (0 in any real design): 1 = ties round half up instead of to even,
// 2 = the upper saturation limit is HI - 1 (off by one LSB).
// Requires D <= 64 (mgd-emu exports only formats with D <= 53).
module mgd_requant #(
    parameter integer WI       = 32,
    parameter integer FI       = 16,
    parameter integer WO       = 8,
    parameter integer FO       = 5,
    parameter integer SIGNED   = 1,
    parameter integer ROUNDING = 1,
    parameter integer OVERFLOW = 0,
    parameter integer FAULT    = 0
) (
    input  wire signed [WI-1:0] x,
    input  wire        [63:0]   rnd,
    output wire        [WO-1:0] y,
    output wire                 sat
);
    localparam integer D  = FI - FO;
    localparam integer WQ = (D > 0 ? WI : WI - D) + 2;   // q plus a rounding carry, signed
    localparam integer N  = WO - SIGNED;                  // magnitude bits of the output

    wire signed [WQ-1:0] xe  = x;                         // sign-extended input
    wire signed [WQ-1:0] one = 1;
    wire signed [WQ-1:0] hi  = (one <<< N) - one - ((FAULT == 2) ? one : 0);
    wire signed [WQ-1:0] lo  = SIGNED ? -(one <<< N) : 0;
    wire signed [WQ-1:0] q;                               // rounded, before overflow

    generate
        if (D > 0) begin : g_narrow
            localparam [D-1:0] HALF = {{D{1'b0}}, 1'b1} << (D - 1);   // 2^(D-1)
            wire signed [WQ-1:0] fl  = xe >>> D;
            wire        [D-1:0]  low = x[D-1:0];
            wire up_nearest = (FAULT == 1) ? (low >= HALF)
                                           : ((low > HALF) || (low == HALF && fl[0]));
            wire up_stochastic = rnd[63 -: D] < low;
            wire up = (ROUNDING == 1) ? up_nearest : (ROUNDING == 2) ? up_stochastic : 1'b0;
            assign q = fl + $signed({{(WQ-1){1'b0}}, up});
        end else begin : g_widen
            assign q = xe <<< (-D);
        end
    endgenerate

    wire over  = q > hi;
    wire under = q < lo;
    assign y   = (OVERFLOW == 0) ? (over ? hi[WO-1:0] : under ? lo[WO-1:0] : q[WO-1:0]) : q[WO-1:0];
    assign sat = over | under;
endmodule
