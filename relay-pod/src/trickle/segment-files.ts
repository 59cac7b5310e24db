/** Segment files are numbered with this many digits, so that `cat DIR/*.ts` reads them in order. */
const SEGMENT_NAME_DIGITS = 6;

/** The file name of segment `seq`: 000000.ts, 000001.ts, … (longer once seq passes 999999). */
export function segmentFileName(seq: number, extension = ".ts"): string {
  return `${String(seq).padStart(SEGMENT_NAME_DIGITS, "0")}${extension}`;
}
