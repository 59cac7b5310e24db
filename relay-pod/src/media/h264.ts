/** H.264 (ISO/IEC 14496-10) helpers: Annex-B splitting, NAL types, SPS parsing. */

export const NAL_SLICE = 1;
export const NAL_IDR = 5;
export const NAL_SEI = 6;
export const NAL_SPS = 7;
export const NAL_PPS = 8;
export const NAL_AUD = 9;

/** Access unit delimiter with primary_pic_type 7 (any slice type), as a 4-byte start code + NAL. */
export const AUD_NAL_ANNEXB: Buffer = Buffer.from([0, 0, 0, 1, 0x09, 0xf0]);

/**
 * Visits each NAL unit of an Annex-B buffer as [start, end) offsets without the start code and
 * without trailing zero bytes (which belong to the next 4-byte start code). Return false to stop.
 */
export function forEachNal(data: Uint8Array, visit: (start: number, end: number) => boolean | void): void {
  let nalStart = findStartCode(data, 0);
  if (nalStart < 0) return;
  nalStart += 3;
  for (;;) {
    const next = findStartCode(data, nalStart);
    let end = next < 0 ? data.length : next;
    while (end > nalStart && data[end - 1] === 0) end--;
    if (end > nalStart && visit(nalStart, end) === false) return;
    if (next < 0) return;
    nalStart = next + 3;
  }
}

/** Offset of the next 00 00 01 at or after `from`, or -1. */
function findStartCode(data: Uint8Array, from: number): number {
  const last = data.length - 3;
  for (let i = from; i <= last;) {
    // Skip fast: a start code needs data[i+2] === 1 and data[i+1] === 0.
    const third = data[i + 2];
    if (third > 1) {
      i += 3;
    } else if (third === 1) {
      if (data[i + 1] === 0 && data[i] === 0) return i;
      i += 3;
    } else {
      i += 1;
    }
  }
  return -1;
}

/** NAL units without start codes (views into `data`, no copies). */
export function splitAnnexB(data: Buffer): Buffer[] {
  const nals: Buffer[] = [];
  forEachNal(data, (start, end) => {
    nals.push(data.subarray(start, end));
  });
  return nals;
}

export function nalType(nal: Uint8Array): number {
  return nal[0] & 0x1f;
}

/**
 * Type of the first slice NAL (1..5) of an Annex-B access unit, or 0 when there is none in
 * [start, end). Stops at the first slice: all slices of a picture are IDR or none are.
 */
export function firstSliceNalType(data: Uint8Array, start = 0, end = data.length): number {
  const view = start === 0 && end === data.length ? data : data.subarray(start, end);
  let found = 0;
  forEachNal(view, (nalStart) => {
    const type = view[nalStart] & 0x1f;
    if (type >= NAL_SLICE && type <= NAL_IDR) {
      found = type;
      return false;
    }
    return true;
  });
  return found;
}

export function isIdrAccessUnit(annexB: Uint8Array): boolean {
  return firstSliceNalType(annexB) === NAL_IDR;
}

/** HEVC: the first VCL NAL is an IRAP picture (types 16..23: BLA, IDR, CRA). */
export function isHevcIrapAccessUnit(annexB: Uint8Array): boolean {
  let irap = false;
  forEachNal(annexB, (start) => {
    const type = (annexB[start] >> 1) & 0x3f;
    if (type < 32) {
      irap = type >= 16 && type <= 23;
      return false;
    }
    return true;
  });
  return irap;
}

export interface SpsInfo {
  profileIdc: number;
  /** constraint_set0..5 flags and reserved bits, as the byte after profile_idc. */
  constraintFlags: number;
  levelIdc: number;
  width: number;
  height: number;
  /** From VUI bitstream_restriction, when present. */
  maxNumReorderFrames?: number;
  /** Frames per second from VUI timing info (time_scale / (2 * num_units_in_tick)), when present. */
  frameRate?: number;
  frameMbsOnly: boolean;
  /** "Constrained Baseline" in ffprobe's words: profile 66 with constraint_set1. */
  constrainedBaseline: boolean;
  /**
   * Whether the stream may reorder frames (B-frames): never for Baseline; else from
   * max_num_reorder_frames when signalled, true when not (the spec's default allows reordering).
   */
  bFramesPossible: boolean;
  /** e.g. "42c01e": profile, constraints, level as in a WebRTC profile-level-id. */
  profileLevelId: string;
}

/** Reads an RBSP (emulation-prevention bytes removed) bit by bit, Exp-Golomb included. */
class BitReader {
  private bytePos = 0;
  private bitPos = 0;
  constructor(private readonly data: Uint8Array) {}

  bit(): number {
    if (this.bytePos >= this.data.length) throw new Error("SPS is truncated");
    const value = (this.data[this.bytePos] >> (7 - this.bitPos)) & 1;
    if (++this.bitPos === 8) {
      this.bitPos = 0;
      this.bytePos++;
    }
    return value;
  }

  bits(count: number): number {
    let value = 0;
    for (let i = 0; i < count; i++) value = value * 2 + this.bit();
    return value;
  }

  ue(): number {
    let leadingZeros = 0;
    while (this.bit() === 0) {
      if (++leadingZeros > 31) throw new Error("SPS has an invalid Exp-Golomb code");
    }
    return 2 ** leadingZeros - 1 + this.bits(leadingZeros);
  }

  se(): number {
    const codeNum = this.ue();
    return codeNum & 1 ? (codeNum + 1) / 2 : -(codeNum / 2);
  }
}

/** Removes emulation_prevention_three_byte (00 00 03 -> 00 00). */
export function nalToRbsp(nal: Uint8Array): Uint8Array {
  const out = new Uint8Array(nal.length);
  let length = 0;
  let zeros = 0;
  for (let i = 0; i < nal.length; i++) {
    const byte = nal[i];
    if (zeros >= 2 && byte === 3) {
      zeros = 0;
      continue;
    }
    zeros = byte === 0 ? zeros + 1 : 0;
    out[length++] = byte;
  }
  return out.subarray(0, length);
}

const HIGH_PROFILES = new Set([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135]);

function skipScalingList(reader: BitReader, size: number): void {
  let lastScale = 8;
  let nextScale = 8;
  for (let j = 0; j < size; j++) {
    if (nextScale !== 0) nextScale = (lastScale + reader.se() + 256) % 256;
    lastScale = nextScale === 0 ? lastScale : nextScale;
  }
}

function skipHrdParameters(reader: BitReader): void {
  const cpbCount = reader.ue() + 1;
  reader.bits(8); // bit_rate_scale, cpb_size_scale
  for (let i = 0; i < cpbCount; i++) {
    reader.ue();
    reader.ue();
    reader.bit();
  }
  reader.bits(20); // four 5-bit lengths
}

/** Parses a sequence parameter set NAL (with its 1-byte NAL header, without start code). */
export function parseSps(nal: Uint8Array): SpsInfo {
  if (nal.length < 4 || (nal[0] & 0x1f) !== NAL_SPS) throw new Error("not an SPS NAL unit");
  const reader = new BitReader(nalToRbsp(nal.subarray(1)));
  const profileIdc = reader.bits(8);
  const constraintFlags = reader.bits(8);
  const levelIdc = reader.bits(8);
  reader.ue(); // seq_parameter_set_id
  let chromaFormatIdc = 1;
  let separateColourPlane = 0;
  if (HIGH_PROFILES.has(profileIdc)) {
    chromaFormatIdc = reader.ue();
    if (chromaFormatIdc === 3) separateColourPlane = reader.bit();
    reader.ue(); // bit_depth_luma_minus8
    reader.ue(); // bit_depth_chroma_minus8
    reader.bit(); // qpprime_y_zero_transform_bypass_flag
    if (reader.bit()) {
      const listCount = chromaFormatIdc === 3 ? 12 : 8;
      for (let i = 0; i < listCount; i++) if (reader.bit()) skipScalingList(reader, i < 6 ? 16 : 64);
    }
  }
  reader.ue(); // log2_max_frame_num_minus4
  const picOrderCntType = reader.ue();
  if (picOrderCntType === 0) {
    reader.ue();
  } else if (picOrderCntType === 1) {
    reader.bit();
    reader.se();
    reader.se();
    const cycle = reader.ue();
    for (let i = 0; i < cycle; i++) reader.se();
  }
  reader.ue(); // max_num_ref_frames
  reader.bit(); // gaps_in_frame_num_value_allowed_flag
  const widthInMbs = reader.ue() + 1;
  const heightInMapUnits = reader.ue() + 1;
  const frameMbsOnly = reader.bit() === 1;
  if (!frameMbsOnly) reader.bit(); // mb_adaptive_frame_field_flag
  reader.bit(); // direct_8x8_inference_flag
  let cropLeft = 0;
  let cropRight = 0;
  let cropTop = 0;
  let cropBottom = 0;
  if (reader.bit()) {
    cropLeft = reader.ue();
    cropRight = reader.ue();
    cropTop = reader.ue();
    cropBottom = reader.ue();
  }
  const chromaArrayType = separateColourPlane ? 0 : chromaFormatIdc;
  const cropUnitX = chromaArrayType === 0 ? 1 : chromaArrayType === 3 ? 1 : 2;
  const cropUnitY = (chromaArrayType === 0 ? 1 : chromaArrayType === 1 ? 2 : 1) * (frameMbsOnly ? 1 : 2);
  const width = widthInMbs * 16 - cropUnitX * (cropLeft + cropRight);
  const height = (frameMbsOnly ? 1 : 2) * heightInMapUnits * 16 - cropUnitY * (cropTop + cropBottom);

  let maxNumReorderFrames: number | undefined;
  let frameRate: number | undefined;
  try {
    if (reader.bit()) {
      // vui_parameters()
      if (reader.bit() && reader.bits(8) === 255) reader.bits(32); // aspect_ratio_idc == Extended_SAR
      if (reader.bit()) reader.bit(); // overscan
      if (reader.bit()) {
        reader.bits(4); // video_format, video_full_range_flag
        if (reader.bit()) reader.bits(24); // colour description
      }
      if (reader.bit()) {
        reader.ue();
        reader.ue();
      }
      if (reader.bit()) {
        const numUnitsInTick = reader.bits(32);
        const timeScale = reader.bits(32);
        reader.bit(); // fixed_frame_rate_flag
        if (numUnitsInTick > 0) frameRate = timeScale / (2 * numUnitsInTick);
      }
      const nalHrd = reader.bit();
      if (nalHrd) skipHrdParameters(reader);
      const vclHrd = reader.bit();
      if (vclHrd) skipHrdParameters(reader);
      if (nalHrd || vclHrd) reader.bit(); // low_delay_hrd_flag
      reader.bit(); // pic_struct_present_flag
      if (reader.bit()) {
        reader.bit(); // motion_vectors_over_pic_boundaries_flag
        reader.ue(); // max_bytes_per_pic_denom
        reader.ue(); // max_bits_per_mb_denom
        reader.ue(); // log2_max_mv_length_horizontal
        reader.ue(); // log2_max_mv_length_vertical
        maxNumReorderFrames = reader.ue();
        reader.ue(); // max_dec_frame_buffering
      }
    }
  } catch {
    // A truncated VUI still leaves the essential fields above usable.
  }

  const constrainedBaseline = profileIdc === 66 && (constraintFlags & 0x40) !== 0;
  const bFramesPossible =
    profileIdc === 66 ? false : maxNumReorderFrames !== undefined ? maxNumReorderFrames > 0 : true;
  const hex = (value: number) => value.toString(16).padStart(2, "0");
  return {
    profileIdc,
    constraintFlags,
    levelIdc,
    width,
    height,
    maxNumReorderFrames,
    frameRate,
    frameMbsOnly,
    constrainedBaseline,
    bFramesPossible,
    profileLevelId: hex(profileIdc) + hex(constraintFlags) + hex(levelIdc),
  };
}

/** The first SPS of an Annex-B buffer, parsed, or undefined. */
export function findSps(annexB: Uint8Array): SpsInfo | undefined {
  let sps: SpsInfo | undefined;
  forEachNal(annexB, (start, end) => {
    if ((annexB[start] & 0x1f) !== NAL_SPS) return true;
    try {
      sps = parseSps(annexB.subarray(start, end));
    } catch {
      // keep looking
    }
    return sps === undefined;
  });
  return sps;
}
