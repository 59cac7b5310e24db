/** Carriage return, then erase to the end of the line. */
const CLEAR_LINE = "\r\x1b[K";

/**
 * A progress line kept at the bottom of a terminal and redrawn in place; everything else (log lines,
 * messages) is printed above it, so nothing lands in the middle of it. When the stream is not a
 * terminal, every update is a line of its own.
 */
export class ProgressLine {
  private current = "";

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  update(line: string): void {
    if (this.out.isTTY !== true) {
      this.out.write(`${line}\n`);
      return;
    }
    this.current = line;
    this.out.write(CLEAR_LINE + this.fit(line));
  }

  /** Writes text above the progress line (a newline is added when the text has none). */
  print(text: string): void {
    const lines = text.endsWith("\n") ? text : `${text}\n`;
    if (this.out.isTTY !== true || this.current === "") this.out.write(lines);
    else this.out.write(CLEAR_LINE + lines + this.fit(this.current));
  }

  /** Leaves the last progress line on screen; what follows starts below it. */
  finish(): void {
    if (this.out.isTTY === true && this.current !== "") this.out.write("\n");
    this.current = "";
  }

  private fit(line: string): string {
    // A line that reaches the last column wraps on some terminals and can then not be redrawn.
    const columns = this.out.columns;
    return columns > 1 && line.length >= columns ? line.slice(0, columns - 1) : line;
  }
}
