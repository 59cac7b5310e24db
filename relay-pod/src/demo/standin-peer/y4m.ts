/**
 * Incremental reader of a YUV4MPEG2 stream (what `ffmpeg -f yuv4mpegpipe` writes): one header line,
 * then per frame a "FRAME[ params]\n" line followed by width×height×1.5 bytes (4:2:0 only).
 */
export class Y4mReader {
  header: Buffer | undefined;
  width = 0;
  height = 0;
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly onFrame: (frame: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    for (;;) {
      const newline = this.buffered.indexOf(0x0a);
      if (newline < 0) return;
      if (!this.header) {
        this.header = Buffer.from(this.buffered.subarray(0, newline + 1));
        this.parseHeader(this.header.toString("latin1"));
        this.buffered = this.buffered.subarray(newline + 1);
        continue;
      }
      const frameSize = (this.width * this.height * 3) / 2;
      if (this.buffered.length < newline + 1 + frameSize) return;
      this.onFrame(Buffer.from(this.buffered.subarray(newline + 1, newline + 1 + frameSize)));
      this.buffered = this.buffered.subarray(newline + 1 + frameSize);
    }
  }

  private parseHeader(line: string): void {
    if (!line.startsWith("YUV4MPEG2 ")) throw new Error(`not a YUV4MPEG2 stream: ${line.slice(0, 40)}`);
    for (const token of line.trim().split(" ")) {
      if (token.startsWith("W")) this.width = Number(token.slice(1));
      else if (token.startsWith("H")) this.height = Number(token.slice(1));
      else if (token.startsWith("C") && !token.startsWith("C420")) {
        throw new Error(`unsupported YUV4MPEG2 colour space ${token}`);
      }
    }
    if (!(this.width > 0 && this.height > 0)) throw new Error(`bad YUV4MPEG2 header: ${line.trim()}`);
  }
}

export const Y4M_FRAME_MARKER = Buffer.from("FRAME\n", "latin1");
