/**
 * WAL file names, as Postgres makes them: a segment is 24 hex digits (timeline, log, seg),
 * a timeline history file `TTTTTTTT.history`, a segment cut short at a promotion
 * `<segment>.partial`, and a base backup's marker `<segment>.XXXXXXXX.backup`.
 */
export type WalKind = 'segment' | 'history' | 'partial' | 'backup';

/** Postgres's default WAL segment size, which pgfleet's servers keep. */
export const SEGMENT_BYTES = 16 * 1024 * 1024;

const PATTERNS: [WalKind, RegExp][] = [
  ['segment', /^[0-9A-F]{24}$/],
  ['history', /^[0-9A-F]{8}\.history$/],
  ['partial', /^[0-9A-F]{24}\.partial$/],
  ['backup', /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/],
];

export function walKind(name: string): WalKind | undefined {
  return PATTERNS.find(([, re]) => re.test(name))?.[0];
}

/** The segments after `name`, in order, for a 16 MiB segment size (256 segments per log id). */
export function nextSegments(name: string, count: number, segmentsPerLog = 0x100): string[] {
  if (walKind(name) !== 'segment') return [];
  const timeline = name.slice(0, 8);
  let log = parseInt(name.slice(8, 16), 16);
  let seg = parseInt(name.slice(16, 24), 16);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    seg += 1;
    if (seg >= segmentsPerLog) {
      seg = 0;
      log += 1;
    }
    out.push(`${timeline}${log.toString(16).toUpperCase().padStart(8, '0')}${seg.toString(16).toUpperCase().padStart(8, '0')}`);
  }
  return out;
}

/** A WAL location (`16/B374D848`) as a byte position. */
export function lsnBytes(lsn: string | null | undefined): number | undefined {
  const m = lsn && /^([0-9A-F]+)\/([0-9A-F]+)$/i.exec(lsn);
  return m ? parseInt(m[1]!, 16) * 2 ** 32 + parseInt(m[2]!, 16) : undefined;
}

/**
 * The byte position just past the segment a WAL file is of (16 MiB segments): a segment, a
 * partial segment, or a base backup's marker (named after the segment the backup began in,
 * all archived by the time the marker is). Undefined for a timeline history file or a name
 * that is no WAL file: they say nothing of a position.
 */
export function segmentEndBytes(name: string | undefined, segmentBytes = SEGMENT_BYTES): number | undefined {
  const start = segmentStartBytes(name, segmentBytes);
  return start === undefined ? undefined : start + segmentBytes;
}

/** The byte position where the segment a WAL file is of begins; undefined as for `segmentEndBytes`. */
export function segmentStartBytes(name: string | undefined, segmentBytes = SEGMENT_BYTES): number | undefined {
  const kind = name ? walKind(name) : undefined;
  if (!name || (kind !== 'segment' && kind !== 'partial' && kind !== 'backup')) return undefined;
  return parseInt(name.slice(8, 16), 16) * 2 ** 32 + parseInt(name.slice(16, 24), 16) * segmentBytes;
}

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');

/** The name of the segment of `timeline` that holds byte position `bytes` (16 MiB segments). */
export function segmentName(timeline: number, bytes: number, segmentBytes = SEGMENT_BYTES): string {
  const perLog = 2 ** 32 / segmentBytes;
  const segment = Math.floor(bytes / segmentBytes);
  return `${hex8(timeline)}${hex8(Math.floor(segment / perLog))}${hex8(segment % perLog)}`;
}

/** The history file that starts `timeline`. */
export const historyName = (timeline: number) => `${hex8(timeline)}.history`;
