import type { ResourceObservation } from './observations.ts';

/**
 * What a resource's observation says of its synchronous replication: whether the primary's
 * commits wait on a standby that does not answer, go through, or whether a standby has caught
 * up enough to be made synchronous again. The resource machine (machines/resource.ts) decides
 * on these; they are pure, as it is.
 */

/** Milliseconds commits may wait on a standby that does not answer, when the observation does not say (PGFLEET_SYNC_STALL_MS). */
export const DEFAULT_SYNC_STALL_MS = 3000;
/** WAL a standby may still have to flush when it is made synchronous again: a segment, a moment of streaming. */
export const CAUGHT_UP_BYTES = 16 * 1024 ** 2;

const stallMs = (obs: ResourceObservation) => obs.sync.stallMs || DEFAULT_SYNC_STALL_MS;

/**
 * The standby answers its primary: it streams, and its last reply (sent every second by a
 * healthy one, and at once when it flushes what a commit waits for) is within the threshold.
 */
function standbyAnswers(obs: ResourceObservation): boolean {
  const { standbyState, standbyReplyMs } = obs.sync;
  return standbyState === 'streaming' && standbyReplyMs !== undefined && standbyReplyMs <= stallMs(obs);
}

/**
 * The primary's commits wait for a synchronous standby that does not answer: they have waited
 * past the threshold (PGFLEET_SYNC_STALL_MS) and the standby has not replied for as long, or
 * is not connected at all. A standby that merely falls behind still answers, and is waited for.
 */
export function syncStalled(obs: ResourceObservation): boolean {
  const { names, waiting, waitMs } = obs.sync;
  if (obs.primary.state !== 'available' || !names) return false;
  return waiting !== undefined && waiting > 0 && waitMs !== undefined && waitMs > stallMs(obs) && !standbyAnswers(obs);
}

/** The primary's commits go through: none waits, or the standby they wait for answers. */
export function syncFlowing(obs: ResourceObservation): boolean {
  const { waiting } = obs.sync;
  return obs.primary.state === 'available' && waiting !== undefined && (waiting === 0 || standbyAnswers(obs));
}

/** The standby is up, answers, and has flushed nearly all the primary wrote: it can be synchronous again. */
export function caughtUp(obs: ResourceObservation): boolean {
  const lag = obs.sync.standbyFlushLagBytes;
  return obs.standby.state === 'available' && standbyAnswers(obs) && lag !== undefined && lag <= CAUGHT_UP_BYTES;
}
