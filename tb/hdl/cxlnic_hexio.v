// Simulation-only stream ends for the system testbench (tb/harness.py): a source that
// plays words loaded from a hex file and a sink that appends every handshake to a text
// file.  They let the RTL run for thousands of cycles while Python only touches the
// design between bursts (files are read and written in C++ by Verilator).

// Plays words 0..count-1 of FILE (one hex word per line, $readmemh) as a valid/ready
// stream.  A pulse on `load` (re)reads the file and restarts at word 0 with `count`
// words; `pos` is the index of the next word (== count when the burst is played).
module cxlnic_hexsrc #(parameter W = 8, parameter D = 16, parameter FILE = "src.hex") (
    input  wire          clk,
    input  wire          rst,
    input  wire          load,
    input  wire [31:0]   count,
    output wire          valid,
    input  wire          ready,
    output wire [W-1:0]  data,
    output reg  [31:0]   pos
);
    reg [W-1:0] mem [0:D-1];
    reg [31:0] n;
    always @(posedge clk) begin
        if (rst) begin
            pos <= 0;
            n <= 0;
        end else if (load) begin
            $readmemh(FILE, mem, 0, count - 1);
            pos <= 0;
            n <= count;
        end else if (valid && ready) begin
            pos <= pos + 1;
        end
    end
    assign valid = pos < n;
    assign data = mem[pos[$clog2(D)-1:0]];
endmodule

// Writes "<hex word>\n" to FILE for every cycle with valid && ready; `flush` makes the
// writes visible to a reader of the file.
module cxlnic_hexsink #(parameter W = 8, parameter FILE = "sink.txt") (
    input  wire          clk,
    input  wire          valid,
    input  wire          ready,
    input  wire [W-1:0]  data,
    input  wire          flush
);
    integer fd;
    initial fd = $fopen(FILE, "w");
    always @(posedge clk) begin
        if (valid && ready) $fwrite(fd, "%x\n", data);
        if (flush) $fflush(fd);
    end
endmodule

// The system harness's DRAM array (tb/harness.py SimDram): D lines of W bits, all zero at
// time 0, one combinational read port and one write port with a byte enable.  Hand-written
// because Amaranth would spell the initial value out bit by bit (the table image is tens of
// thousands of 512-bit lines), which costs more to generate and compile than the rest of the
// harness.
module cxlnic_simmem #(parameter W = 512, parameter D = 16, parameter AW = 4) (
    input  wire            clk,
    input  wire [AW-1:0]   raddr,
    output wire [W-1:0]    rdata,
    input  wire [AW-1:0]   waddr,
    input  wire [W/8-1:0]  wen,
    input  wire [W-1:0]    wdata
);
    reg [W-1:0] store [0:D-1];
    integer k;
    initial for (k = 0; k < D; k = k + 1) store[k] = {W{1'b0}};
    assign rdata = store[raddr];
    always @(posedge clk)
        for (k = 0; k < W / 8; k = k + 1)
            if (wen[k]) store[waddr][k*8 +: 8] <= wdata[k*8 +: 8];
endmodule
