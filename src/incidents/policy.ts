import { statesAlong, type StateMeta } from '../../machines/policy.ts';
import { MACHINES, type MachineName } from '../runner/machines.ts';

/**
 * What an entity's state means for paging, read off the state in its machine file (its
 * health tag and `meta`, see machines/policy.ts): this module only applies the settings.
 */

/** How an entity's state counts: where it should be, trouble, on the way, or going away. */
export type Health = 'healthy' | 'unhealthy' | 'neutral' | 'gone';

/** The states along `path` with their paging policy, outermost first. */
function policyAlong(machine: MachineName, path: string) {
  return statesAlong(MACHINES[machine].logic, path).map((node) => ({ tags: node.tags, meta: (node.meta ?? {}) as StateMeta }));
}

export function healthOf(machine: MachineName, path: string): Health {
  const tags = new Set(policyAlong(machine, path).flatMap((state) => state.tags));
  if (tags.has('healthy')) return 'healthy';
  if (tags.has('unhealthy')) return 'unhealthy';
  return tags.has('gone') ? 'gone' : 'neutral';
}

/** Seconds an entity may stay in `path` before a human is paged; 0: no limit. PGFLEET_STUCK_AFTER overrides them all. */
export function stuckAfter(machine: MachineName, path: string, override: number | undefined): number {
  if (override !== undefined) return override;
  const declared = policyAlong(machine, path)
    .map((state) => state.meta.pageAfter)
    .filter((after) => after !== undefined)
    .at(-1);
  return typeof declared === 'string' ? settings[declared] : (declared ?? 0);
}

/** What an operator reads first: the trouble in words; a state that names none (no trouble) reads as its path. */
export function troubleReason(machine: MachineName, path: string): string {
  const states = policyAlong(machine, path);
  const at = states.findIndex((state) => state.meta.trouble !== undefined);
  if (at < 0) return path;
  return states[at]!.meta.trouble!.replace('{step}', path.split('.').slice(0, at).join('.'));
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
