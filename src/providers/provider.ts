import type { KeyedCertificate } from '../tls/certificates.ts';

/** A server as a provider sees it. */
export interface ServerRecord {
  id: string;
  provider: string;
  host: string | null;
  port: number | null;
  superuserPassword: string;
  attrs: Record<string, string>;
  /** Where the server it follows (`attrs.follows`) listens now, when it follows one that is placed. */
  leader?: { host: string; port: number };
}

export interface Placement {
  host: string;
  port: number;
  /** Provider-specific facts kept on the server row (a data directory, an instance id). */
  attrs: Record<string, string>;
}

/**
 * How a former primary came back: rewound; rebuilt because the rewind could not be done; or
 * started, because an earlier attempt had already made it a standby and got no further.
 */
export type Rejoined = { how: 'rewound' } | { how: 'rebuilt'; because: string } | { how: 'started' };

/**
 * A step that cannot be done yet, for a reason that passes (the server it copies from is
 * down for a moment, the base backup it starts from is still being taken), and that left
 * things so that asking again can succeed. Its task ends and asks again, rather than
 * sleeping in place or failing towards a dead job.
 */
export class NotYet extends Error {}

/** The base backup a copy starts from is not finished: `label` of `leader`, or any when no label is named. */
export class BackupNotFinished extends NotYet {
  constructor(
    readonly leader: string,
    readonly label: string | undefined,
  ) {
    super(label ? `the backup ${label} of the leader ${leader} is not finished` : `the leader ${leader} has no base backup yet`);
  }
}

/**
 * Creates, runs and destroys Postgres servers somewhere. Every method may run twice for
 * one server (a job whose worker died runs again), so each must be safe to repeat, and
 * none may ever remove or re-initialise data except `destroy`, which only an operator's
 * delete reaches.
 */
export interface Provider {
  readonly name: string;
  /** Decide where the server lives. Repeating it for a placed server returns the same place. */
  provision(server: ServerRecord): Promise<Placement>;
  /**
   * Create the cluster if it does not exist yet, speaking TLS with `certificate` (written
   * again when the cluster exists: initializing twice is fine).
   */
  initialize(server: ServerRecord, certificate: KeyedCertificate): Promise<void>;
  /**
   * Put a new key and certificate where the server reads them, replacing the old ones; a
   * running server serves them from its next configuration reload.
   */
  installCertificate(server: ServerRecord, certificate: KeyedCertificate): Promise<void>;
  /**
   * Let customers' roles connect over TLS only (pg_hba.conf), from the next configuration
   * reload. Only for a server that serves TLS: others would let no customer in.
   */
  requireTls(server: ServerRecord): Promise<void>;
  /** Start it and wait until it accepts connections; a running server is left alone. */
  start(server: ServerRecord): Promise<void>;
  /** Bring back a server that is down or hung. */
  restart(server: ServerRecord): Promise<void>;
  /**
   * `fast` by default; `kill` for a server that must stop now whatever state it is in (a
   * fence, a hang): afterwards it takes no connection and acknowledges no commit.
   */
  stop(server: ServerRecord, mode?: 'fast' | 'kill'): Promise<void>;
  /**
   * Bring a fenced former primary back as a standby of `attrs.follows` (at `leader`),
   * keeping what it can of its data, and start it. Whatever an earlier attempt left (the
   * data set aside, a copy made but not started), asking again goes on from there; it
   * throws NotYet while the leader or the backup it needs is not there.
   */
  rejoin(server: ServerRecord): Promise<Rejoined>;
  /**
   * Configure the connection pooler in front of the server from the server's catalog and
   * make sure it runs; nothing for a server placed without one. Called once Postgres is up
   * (after a start, restart or rejoin), after its tenants change, and when it was seen dead.
   */
  refreshPool(server: ServerRecord): Promise<void>;
  /** What the provider sees of the host and process, as observation keys (`pool_alive` for the pooler). */
  observe(server: ServerRecord): Promise<Record<string, string>>;
  /** Private memory (bytes) of the server's processes by pid, as its host sees them; gone ones are left out. */
  processMemory(server: ServerRecord, pids: number[]): Promise<Map<number, number>>;
  /** Stop the server and remove everything it had. */
  destroy(server: ServerRecord): Promise<void>;
}
