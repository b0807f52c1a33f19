/**
 * What a machine reads of its entity's latest observation. Observers record strings, one
 * hstore per entity, so a new check is a new key and never a migration; the tick parses them
 * once (src/runner/observe.ts, with the parser the machine registry names for the machine),
 * and guards read typed fields instead of comparing strings. `raw` keeps every key as it was
 * recorded: what a transition stores and what incidents are shown, and where a check that is
 * not typed yet is read.
 *
 * Parsing keeps each guard's old judgement exactly: a flag is true or false only when it was
 * recorded as 'true' or 'false'; a number is `Number()` of what was recorded (NaN for text
 * that is not one, which every comparison refuses, as it did on the string).
 */

/** The latest observation as the hstore holds it: every source's keys, merged. */
export type RawObservation = Record<string, string>;

/** An observation a machine is shown: typed fields, and the raw map they came from. */
export interface ParsedObservation {
  raw: RawObservation;
}

/** An `observed` event: what an entity's observers saw, as its machine reads it. */
export interface ObservedEvent<Obs extends ParsedObservation> {
  type: 'observed';
  at: string;
  obs: Obs;
}

function flag(value: string | undefined): boolean | undefined {
  return value === 'true' ? true : value === 'false' ? false : undefined;
}

function count(value: string | undefined): number | undefined {
  return value === undefined ? undefined : Number(value);
}

/** What the server machine reads of a server's observation. */
export interface ServerObservation extends ParsedObservation {
  /** Postgres answered the probe (`reachable`, observers/postgres.ts). */
  reachable: boolean | undefined;
  /** The Postgres process is alive, as its host sees it (`alive`, the provider's host). */
  alive: boolean | undefined;
  /** The connection pooler in front of it runs (`pool_alive`); a server without one reports nothing. */
  poolAlive: boolean | undefined;
  /** Failed probes in a row, counted by the server's observe task (`failed_probes`, src/servers/tasks.ts). */
  failedProbes: number | undefined;
  /** Failed probes in a row that make a hang (`hang_probes`, from PGFLEET_HANG_PROBES). */
  hangProbes: number | undefined;
}

export function parseServerObservation(raw: RawObservation): ServerObservation {
  return {
    reachable: flag(raw.reachable),
    alive: flag(raw.alive),
    poolAlive: flag(raw.pool_alive),
    failedProbes: count(raw.failed_probes),
    hangProbes: count(raw.hang_probes),
    raw,
  };
}

/** The roles a resource's machine waits on a server in. */
export type ServerRole = 'primary' | 'standby' | 'target';

/** A server of a resource, as the resource's observer saw its machine and process (`<role>.state`, `<role>.alive`). */
export interface ServerSeen {
  /** Its machine's top-level state. */
  state: string | undefined;
  alive: boolean | undefined;
}

/** How the primary's synchronous replication looks (`sync.*`, observers/resource.ts). */
export interface SyncSeen {
  /** The plan's choice when the standby stalls: `strict` keeps commits waiting, `available` stops waiting for it. */
  mode: string | undefined;
  /** The primary's `synchronous_standby_names`: empty or absent when it waits for none. */
  names: string | undefined;
  /** Commits waiting for a synchronous standby now. */
  waiting: number | undefined;
  /** How long the longest of them has waited. */
  waitMs: number | undefined;
  /** The stall threshold (PGFLEET_SYNC_STALL_MS). */
  stallMs: number | undefined;
  /** The resource's standby as the primary sees it: `streaming` while it is connected. */
  standbyState: string | undefined;
  /** Since its last reply. */
  standbyReplyMs: number | undefined;
  /** WAL the primary wrote that it has not flushed. */
  standbyFlushLagBytes: number | undefined;
}

/** What the resource machine reads of a resource's observation. */
export interface ResourceObservation extends ParsedObservation {
  primary: ServerSeen;
  standby: ServerSeen;
  target: ServerSeen;
  sync: SyncSeen;
}

function serverSeen(raw: RawObservation, role: ServerRole): ServerSeen {
  return { state: raw[`${role}.state`], alive: flag(raw[`${role}.alive`]) };
}

export function parseResourceObservation(raw: RawObservation): ResourceObservation {
  return {
    primary: serverSeen(raw, 'primary'),
    standby: serverSeen(raw, 'standby'),
    target: serverSeen(raw, 'target'),
    sync: {
      mode: raw['sync.mode'],
      names: raw['sync.names'],
      waiting: count(raw['sync.waiting']),
      waitMs: count(raw['sync.wait_ms']),
      stallMs: count(raw['sync.stall_ms']),
      standbyState: raw['sync.standby_state'],
      standbyReplyMs: count(raw['sync.standby_reply_ms']),
      standbyFlushLagBytes: count(raw['sync.standby_flush_lag_bytes']),
    },
    raw,
  };
}
