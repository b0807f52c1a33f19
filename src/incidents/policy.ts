import type { MachineName } from '../runner/machines.ts';

/** How an entity's state counts: where it should be, trouble, on the way, or going away. */
export type Health = 'healthy' | 'unhealthy' | 'neutral' | 'gone';

/**
 * Resource states that bring a database back to whole after losing a server, or in which
 * its standby stalled (it runs without a synchronous copy, or its commits wait): trouble.
 */
const RESTORING = new Set(['failover', 'rejoining', 'replacing', 'unsynchronized', 'stalled']);

export function healthOf(machine: MachineName, path: string): Health {
  const top = path.split('.')[0]!;
  if (machine === 'server') {
    if (top === 'available') return 'healthy';
    if (top === 'unreachable' || top === 'restarting' || top === 'failed') return 'unhealthy';
    if (top === 'deleting' || top === 'deleted' || top === 'fencing' || top === 'fenced') return 'gone';
    return 'neutral';
  }
  if (machine === 'resource') {
    if (top === 'available') return 'healthy';
    if (path.endsWith('.failed') || RESTORING.has(top)) return 'unhealthy';
    if (top === 'deprovisioning' || top === 'deleted') return 'gone';
    return 'neutral';
  }
  return 'neutral';
}

/**
 * Seconds an entity may stay in a state before a human is paged, as data. A server that
 * does not answer gets a minute of automation; one that restarts cannot fix is someone's
 * problem at once, after a minute to be sure. PGFLEET_STUCK_AFTER overrides them all.
 */
export const STUCK_AFTER: Record<string, number> = {
  'server.unreachable': 60,
  'server.restarting': 180,
  'server.failed': 60,
  'server.maintaining': 600,
  'resource.failed': 300,
  'resource.failover': 60,
  'resource.rejoining': 600,
  'resource.replacing': 600,
  // Commits wait (a strict plan): writes are down and only the standby can end it.
  'resource.stalled': 10,
};

export function stuckAfter(machine: MachineName, path: string, override: number | undefined): number {
  if (override !== undefined) return override;
  const top = path.split('.')[0]!;
  // Without a synchronous copy, the window in which a lost primary loses commits: PGFLEET_SYNC_PAGE_AFTER.
  if (machine === 'resource' && top === 'unsynchronized' && !path.endsWith('.failed')) return settings.syncPageAfter;
  return STUCK_AFTER[`${machine}.${path.endsWith('.failed') ? 'failed' : top}`] ?? STUCK_AFTER[`${machine}.${top}`] ?? 0;
}

/** What an operator reads first: the trouble in words. */
export function troubleReason(machine: MachineName, path: string): string {
  if (machine === 'server') {
    const top = path.split('.')[0];
    if (top === 'unreachable') return 'server unreachable';
    if (top === 'restarting') return 'server restarting';
    return 'restart failing';
  }
  const top = path.split('.')[0];
  if (top === 'failover') return 'primary lost: failing over to the standby';
  if (top === 'rejoining') return 'restoring the standby after a failover';
  if (top === 'replacing') return 'standby lost: replacing it';
  if (top === 'unsynchronized') return 'running without a synchronous copy';
  if (top === 'stalled') return 'synchronous standby stalled: commits wait';
  return `${path.replace(/\.failed$/, '')} failing`;
}

export interface IncidentSettings {
  stuckAfter: number | undefined;
  /** Seconds trouble lasts before its customers are told (PGFLEET_NOTICE_GRACE). */
  noticeGrace: number;
  /** Seconds a database may run without a synchronous copy before a human is paged (PGFLEET_SYNC_PAGE_AFTER). */
  syncPageAfter: number;
}

let settings: IncidentSettings = { stuckAfter: undefined, noticeGrace: 0, syncPageAfter: 60 };

/** The deadline override comes from the configuration, once, at start-up. */
export function configureIncidents(next: IncidentSettings): void {
  settings = next;
}

/** The settings as configured: the rest of src/incidents/ reads them here, at each use. */
export function incidentSettings(): IncidentSettings {
  return settings;
}

/** Conditions read off a server's observation that no automation handles yet. */
export const CONDITIONS: Record<string, (obs: Record<string, string>) => boolean> = {
  'archive failing': (obs) => obs.archiver_failing === 'true',
  // archive_timeout keeps a healthy archive within a segment or two of the server.
  'archive lagging': (obs) => Number(obs.archive_lag_bytes) > 256 * 1024 ** 2,
  'disk filling': (obs) => Number(obs.disk_total_bytes) > 0 && Number(obs.disk_free_bytes) / Number(obs.disk_total_bytes) < 0.05,
  'transaction ID wraparound approaching': (obs) => Number(obs.oldest_xid_age) > 1_500_000_000,
  // Placement keeps shared tenants' limits within max_connections: a server this full is a bug or a leak.
  'connection slots nearly exhausted': (obs) =>
    Number(obs.max_connections) > 0 && Number(obs.connections) >= 0.95 * Number(obs.max_connections),
  'replication lagging': (obs) => Number(obs.replication_lag_seconds) > 60 || Number(obs.replication_lag_bytes) > 1024 ** 3,
};
