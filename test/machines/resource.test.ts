import { describe, expect, it } from 'vitest';
import { initialTransition, transition, type SnapshotFrom } from 'xstate';
import { MAX_STEP_RETRIES, RESOURCE_FAILOVER_STATES, resourceMachine, type ResourceEvent } from '../../machines/resource.ts';
import { parseResourceObservation } from '../../machines/observations.ts';
import { emittedJobs, statePath } from '../../src/runner/runner.ts';

type Snapshot = SnapshotFrom<typeof resourceMachine>;

let clock = 0;
/** Strictly increasing fixed-width times, like the database's. */
const t = () => new Date(Date.UTC(2026, 0, 1) + ++clock * 1000).toISOString();

function step(snapshot: Snapshot, event: ResourceEvent) {
  const [next, actions] = transition(resourceMachine, snapshot, event);
  return {
    next,
    state: statePath(next.value),
    jobs: emittedJobs(actions as never).map((j) => j.task + (j.delaySeconds ? `+${j.delaySeconds}s` : '')),
  };
}

function walk(events: ResourceEvent[]): ReturnType<typeof step> {
  let s = { next: initialTransition(resourceMachine)[0], state: '', jobs: [] as string[] };
  for (const e of events) s = step(s.next, e);
  return s;
}

const observed = (obs: Record<string, string>, at = t()): ResourceEvent => ({ type: 'observed', at, obs: parseResourceObservation(obs) });

/** From the failover's first step to the old primary back as a synchronous standby. */
function failedOver(from: ReturnType<typeof step>): ReturnType<typeof step> {
  let s = from;
  for (const event of [
    { type: 'fencing', at: t() },
    observed({ 'primary.state': 'fenced', 'standby.state': 'available' }),
    { type: 'promoted', at: t() },
    { type: 'placed', at: t() },
    observed({ 'primary.state': 'available', 'standby.state': 'available' }),
    { type: 'synchronized', at: t() },
  ] satisfies ResourceEvent[]) {
    s = step(s.next, event);
  }
  return s;
}
const failed = (): ResourceEvent => ({ type: 'step.failed', at: t(), error: 'connection refused' });
const created = (): ResourceEvent[] => [
  { type: 'placed', at: t() },
  observed({ 'primary.state': 'available' }),
  { type: 'tenant.created', at: t() },
];

describe('resource machine', () => {
  it('starts placing the resource', () => {
    const [snapshot, actions] = initialTransition(resourceMachine);
    expect(statePath(snapshot.value)).toBe('creating.placing.trying');
    expect(emittedJobs(actions as never).map((j) => j.task)).toEqual(['place']);
  });

  it('waits for its primary server to be available before creating the tenant', () => {
    let s = walk([{ type: 'placed', at: t() }]);
    expect([s.state, s.jobs]).toEqual(['creating.waiting', ['observe']]);
    s = step(s.next, observed({ 'primary.state': 'starting' }));
    expect([s.state, s.jobs]).toEqual(['creating.waiting', []]);
    s = step(s.next, observed({ 'primary.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['creating.tenant.trying', ['create_tenant']]);
    s = step(s.next, { type: 'tenant.created', at: t() });
    expect([s.state, s.jobs]).toEqual(['available', []]);
  });

  it('on a plan with standbys, places a standby and makes it synchronous before the database is ready', () => {
    let s = walk([{ type: 'placed', at: t() }, observed({ 'primary.state': 'available' })]);
    s = step(s.next, { type: 'tenant.created', at: t(), standby: true });
    expect([s.state, s.jobs]).toEqual(['creating.standby.trying', ['place_standby']]);
    s = step(s.next, { type: 'placed', at: t() });
    expect([s.state, s.jobs]).toEqual(['creating.syncing', ['observe']]);
    expect(step(s.next, observed({ 'primary.state': 'available', 'standby.state': 'starting' })).state).toBe('creating.syncing');
    s = step(s.next, observed({ 'primary.state': 'available', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['creating.synchronous.trying', ['synchronize']]);
    s = step(s.next, { type: 'synchronized', at: t() });
    expect(s.state).toBe('available');
  });

  it('fails over when the primary is lost and a standby is up: fence, promote, rejoin the old primary, hand over the URL', () => {
    const ready = walk(created());
    // A primary that is down with no standby to take over is the server machine's to heal.
    expect(step(ready.next, observed({ 'primary.state': 'restarting' })).state).toBe('available');
    // A crash is seen at the first failed probe; a live process that does not answer waits
    // for its machine to count a hang.
    const up = { 'standby.state': 'available' };
    expect(step(ready.next, observed({ ...up, 'primary.state': 'unreachable', 'primary.alive': 'false' })).state).toBe(
      'failover.fencing.trying',
    );
    expect(step(ready.next, observed({ ...up, 'primary.state': 'unreachable', 'primary.alive': 'true' })).state).toBe('available');
    let s = step(ready.next, observed({ 'primary.state': 'restarting', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['failover.fencing.trying', ['fence_primary']]);
    s = step(s.next, { type: 'fencing', at: t() });
    expect([s.state, s.jobs]).toEqual(['failover.waiting', ['observe']]);
    // Never two primaries: nothing is promoted until the old one is fenced.
    expect(step(s.next, observed({ 'primary.state': 'fencing', 'standby.state': 'available' })).state).toBe('failover.waiting');
    s = step(s.next, observed({ 'primary.state': 'fenced', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['failover.promoting.trying', ['promote']]);
    s = step(s.next, { type: 'promoted', at: t() });
    expect([s.state, s.jobs]).toEqual(['rejoining.placing.trying', ['restore_standby']]);
    s = step(s.next, { type: 'placed', at: t() });
    expect([s.state, s.jobs]).toEqual(['rejoining.syncing', ['observe']]);
    expect(step(s.next, observed({ 'primary.state': 'available', 'standby.state': 'rejoining' })).state).toBe('rejoining.syncing');
    s = step(s.next, observed({ 'primary.state': 'available', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['rejoining.synchronous.trying', ['synchronize']]);
    s = step(s.next, { type: 'synchronized', at: t() });
    expect([s.state, s.jobs]).toEqual(['available', ['deliver']]);
  });

  it(
    'fails over a lost primary only in RESOURCE_FAILOVER_STATES: ' + "while the old one rejoins, the new one is its machine's to restart",
    () => {
      const lost = { 'primary.state': 'restarting', 'standby.state': 'available' };
      const ready = walk(created());
      expect(RESOURCE_FAILOVER_STATES).toContain(ready.state);
      expect(step(ready.next, observed(lost)).state).toBe('failover.fencing.trying');
      let s = step(ready.next, observed(lost));
      for (const e of [
        { type: 'fencing', at: t() },
        observed({ 'primary.state': 'fenced', 'standby.state': 'available' }),
      ] as ResourceEvent[])
        s = step(s.next, e);
      expect(RESOURCE_FAILOVER_STATES).toContain(s.state.split('.')[0]);
      for (const e of [
        { type: 'promoted', at: t() },
        { type: 'placed', at: t() },
      ] as ResourceEvent[])
        s = step(s.next, e);
      // The old primary is up again, not yet synchronous: nothing promotes it.
      expect(RESOURCE_FAILOVER_STATES).not.toContain(s.state.split('.')[0]);
      expect(step(s.next, observed(lost)).state.split('.')[0]).toBe('rejoining');
    },
  );

  it('switches over by hand through the same steps as a failover', () => {
    const s = step(walk(created()).next, { type: 'switchover', at: t() });
    expect([s.state, s.jobs]).toEqual(['failover.fencing.trying', ['fence_primary']]);
  });

  it('ignores an observation older than one it acted on', () => {
    const stale = t();
    const s = walk([{ type: 'placed', at: t() }, observed({ 'primary.state': 'starting' })]);
    expect(step(s.next, observed({ 'primary.state': 'available' }, stale)).state).toBe('creating.waiting');
  });

  it('retries a failing step with backoff, then shows it as failed and keeps retrying slowly', () => {
    let s = walk([{ type: 'placed', at: t() }, observed({ 'primary.state': 'available' })]);
    const delays: string[][] = [];
    for (let i = 1; i < MAX_STEP_RETRIES; i++) {
      s = step(s.next, failed());
      expect(s.state).toBe('creating.tenant.trying');
      delays.push(s.jobs);
    }
    expect(delays).toEqual([['create_tenant+1s'], ['create_tenant+2s'], ['create_tenant+4s'], ['create_tenant+8s']]);
    s = step(s.next, failed());
    expect([s.state, s.jobs]).toEqual(['creating.tenant.failed', ['create_tenant+16s']]);
    expect(s.next.context.lastError).toBe('connection refused');
    s = step(s.next, failed());
    expect([s.state, s.jobs]).toEqual(['creating.tenant.failed', ['create_tenant+60s']]);
    s = step(s.next, failed());
    expect(s.jobs).toEqual(['create_tenant+120s']);
    // A job that fell out is asked for again on the next observation, with the same backoff.
    expect(step(s.next, observed({})).jobs).toEqual(['create_tenant+120s']);
    s = step(s.next, { type: 'tenant.created', at: t() });
    expect(s.state).toBe('available');
  });

  it('a step that succeeds starts the next one with a clean count', () => {
    let s = walk([failed(), failed()]);
    expect(s.jobs).toEqual(['place+2s']);
    s = step(s.next, { type: 'placed', at: t() });
    s = step(s.next, observed({ 'primary.state': 'available' }));
    expect(s.jobs).toEqual(['create_tenant']);
  });

  it('hands the config to the platform once available when the answer was deferred, until it is taken', () => {
    let s = walk([{ type: 'deferred', at: t() }, ...created()]);
    expect([s.state, s.jobs]).toEqual(['available', ['deliver']]);
    s = step(s.next, { type: 'delivery.failed', at: t(), error: 'the config update answered 503' });
    expect(s.jobs).toEqual(['deliver+2s']);
    s = step(s.next, { type: 'delivery.failed', at: t(), error: 'the config update answered 503' });
    expect(s.jobs).toEqual(['deliver+4s']);
    s = step(s.next, { type: 'delivered', at: t() });
    expect(s.next.context).toMatchObject({ deliver: false, deliveryFailures: 0 });
    // An answer that carried the config needs no delivery.
    expect(walk(created()).jobs).toEqual([]);
  });

  it('changes plan in place on the same kind of server, and moves to another kind', () => {
    const ready = walk(created());
    let s = step(ready.next, { type: 'change_plan', at: t(), plan: 'shared-plus', move: false });
    expect([s.state, s.jobs]).toEqual(['resizing.trying', ['apply_plan']]);
    expect(step(s.next, { type: 'applied', at: t() }).state).toBe('available');

    s = step(ready.next, { type: 'change_plan', at: t(), plan: 'dedicated', move: true });
    expect([s.state, s.jobs]).toEqual(['changing.placing.trying', ['place']]);
    s = step(s.next, { type: 'placed', at: t() });
    expect([s.state, s.jobs]).toEqual(['changing.waiting', ['observe']]);
    // Only the server it moves to counts here.
    expect(step(s.next, observed({ 'primary.state': 'available', 'target.state': 'starting' })).state).toBe('changing.waiting');
    s = step(s.next, observed({ 'primary.state': 'available', 'target.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['changing.copying.trying', ['move']]);
    s = step(s.next, { type: 'moved', at: t() });
    expect([s.state, s.jobs]).toEqual(['changing.activating.trying', ['activate']]);
    s = step(s.next, { type: 'activated', at: t() });
    expect([s.state, s.jobs]).toEqual(['changing.cleaning.trying', ['cleanup']]);
    // Another change while one is under way changes nothing.
    expect(step(s.next, { type: 'change_plan', at: t(), plan: 'shared', move: true }).state).toBe('changing.cleaning.trying');
    s = step(s.next, { type: 'cleaned', at: t() });
    expect(s.state).toBe('available');
  });

  it('adds a synchronous standby for a plan that wants one, and drops it for one that does not', () => {
    const ready = walk(created());
    let s = step(ready.next, { type: 'change_plan', at: t(), plan: 'ha', move: false, standby: 'add' });
    expect([s.state, s.jobs]).toEqual(['adding.standby.trying', ['place_standby']]);
    expect(step(s.next, { type: 'change_plan', at: t(), plan: 'dedicated', move: false, standby: 'drop' }).state).toBe(
      'adding.standby.trying',
    );
    s = step(s.next, { type: 'placed', at: t() });
    s = step(s.next, observed({ 'primary.state': 'available', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['adding.synchronous.trying', ['synchronize']]);
    s = step(s.next, { type: 'synchronized', at: t() });
    expect([s.state, s.jobs]).toEqual(['resizing.trying', ['apply_plan']]);
    // The URL became the router's: the platform is handed it.
    expect(step(s.next, { type: 'applied', at: t() }).jobs).toEqual(['deliver']);

    s = step(ready.next, { type: 'change_plan', at: t(), plan: 'dedicated', move: false, standby: 'drop' });
    expect([s.state, s.jobs]).toEqual(['dropping.trying', ['drop_standby']]);
    s = step(s.next, { type: 'standby.dropped', at: t() });
    expect([s.state, s.jobs]).toEqual(['resizing.trying', ['apply_plan']]);
  });

  it('replaces a standby that failed for good: the primary stops waiting for it first', () => {
    const ready = walk(created());
    expect(step(ready.next, observed({ 'primary.state': 'available', 'standby.state': 'restarting' })).state).toBe('available');
    let s = step(ready.next, observed({ 'primary.state': 'available', 'standby.state': 'failed' }));
    expect([s.state, s.jobs]).toEqual(['replacing.releasing.trying', ['drop_standby']]);
    s = step(s.next, { type: 'standby.dropped', at: t() });
    expect([s.state, s.jobs]).toEqual(['replacing.standby.trying', ['place_standby']]);
    s = step(s.next, { type: 'placed', at: t() });
    s = step(s.next, observed({ 'primary.state': 'available', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['replacing.synchronous.trying', ['synchronize']]);
    expect(step(s.next, { type: 'synchronized', at: t() }).state).toBe('available');
  });

  it("rotates the owner's password as a step, then hands the platform the new config", () => {
    const ready = walk(created());
    let s = step(ready.next, { type: 'rotate', at: t() });
    expect([s.state, s.jobs]).toEqual(['rotating.trying', ['rotate_password']]);
    // A second request, or a plan change, while it runs changes nothing.
    expect(step(s.next, { type: 'rotate', at: t() }).jobs).toEqual([]);
    expect(step(s.next, { type: 'change_plan', at: t(), plan: 'shared-plus', move: false }).state).toBe('rotating.trying');
    s = step(s.next, failed());
    expect([s.state, s.jobs]).toEqual(['rotating.trying', ['rotate_password+1s']]);
    s = step(s.next, { type: 'rotated', at: t() });
    expect([s.state, s.jobs]).toEqual(['available', ['deliver']]);
    expect(s.next.context.rotating).toBe(false);
    // Only an available database rotates: one that is changing plan does not take it.
    const changing = step(ready.next, { type: 'change_plan', at: t(), plan: 'dedicated', move: true });
    expect(step(changing.next, { type: 'rotate', at: t() }).state).toBe('changing.placing.trying');
  });

  it('fails over when the primary is lost during a rotation, and finishes the rotation on the new primary', () => {
    let s = step(walk(created()).next, { type: 'rotate', at: t() });
    s = step(s.next, observed({ 'primary.state': 'available', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['rotating.trying', ['rotate_password']]);
    s = step(s.next, observed({ 'primary.state': 'restarting', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['failover.fencing.trying', ['fence_primary']]);
    s = failedOver(s);
    // No config with the old password in between: the rotation goes on, and its end hands over the new one.
    expect([s.state, s.jobs]).toEqual(['rotating.trying', ['rotate_password']]);
    s = step(s.next, { type: 'rotated', at: t() });
    expect([s.state, s.jobs]).toEqual(['available', ['deliver']]);
  });

  it('makes, rotates and destroys named credentials as a step, without touching the config', () => {
    let s = step(walk(created()).next, { type: 'credentials', at: t() });
    expect([s.state, s.jobs]).toEqual(['syncing.trying', ['sync_credentials']]);
    expect(step(s.next, { type: 'rotate', at: t() }).state).toBe('syncing.trying');
    s = step(s.next, { type: 'credentials.synced', at: t() });
    expect([s.state, s.jobs]).toEqual(['available', []]);
  });

  it('fails over when the primary is lost while credentials are synced, then syncs them on the new primary', () => {
    let s = step(walk(created()).next, { type: 'credentials', at: t() });
    s = step(s.next, observed({ 'primary.state': 'failed', 'standby.state': 'available' }));
    expect([s.state, s.jobs]).toEqual(['failover.fencing.trying', ['fence_primary']]);
    s = failedOver(s);
    expect([s.state, s.jobs]).toEqual(['syncing.trying', ['deliver', 'sync_credentials']]);
    s = step(s.next, { type: 'credentials.synced', at: t() });
    // The failover's new URL is still wanted by the platform until it takes it (one pending job per task).
    expect([s.state, s.jobs]).toEqual(['available', ['deliver']]);
  });

  it('deprovisions from any state, once, and ends', () => {
    let s = walk([{ type: 'deprovision', at: t() }]);
    expect([s.state, s.jobs]).toEqual(['deprovisioning.trying', ['drop_tenant']]);
    expect(step(s.next, { type: 'deprovision', at: t() }).jobs).toEqual([]);
    s = step(s.next, { type: 'dropped', at: t() });
    expect(s.state).toBe('deleted');
    expect(s.next.status).toBe('done');
  });
  describe('a standby that stalls', () => {
    /** An ha database, available, with its standby synchronous. */
    const ha = () => walk([...created(), { type: 'tenant.created', at: t(), standby: true }, { type: 'placed', at: t() }]).next;
    const whole = () => {
      let s = step(ha(), observed({ 'primary.state': 'available', 'standby.state': 'available' }));
      s = step(s.next, { type: 'synchronized', at: t() });
      expect(s.state).toBe('available');
      return s.next;
    };
    const up = { 'primary.state': 'available', 'standby.state': 'available', 'sync.names': 'FIRST 1 ("s")', 'sync.stall_ms': '3000' };
    const answering = { ...up, 'sync.standby_state': 'streaming', 'sync.standby_reply_ms': '400', 'sync.standby_flush_lag_bytes': '0' };
    /** Commits have waited 3.5 s for a standby whose last reply is as old. */
    const stalled = {
      ...up,
      'sync.waiting': '4',
      'sync.wait_ms': '3500',
      'sync.standby_state': 'streaming',
      'sync.standby_reply_ms': '3600',
      'sync.standby_flush_lag_bytes': '90000',
    };

    it('is not a stall while it answers, or before commits have waited past the threshold', () => {
      const s = whole();
      // Commits wait long for a standby that answers (it is only behind): it is waited for.
      expect(step(s, observed({ ...answering, 'sync.waiting': '3', 'sync.wait_ms': '9000' })).state).toBe('available');
      expect(step(s, observed({ ...stalled, 'sync.wait_ms': '2000' })).state).toBe('available');
      expect(step(s, observed({ ...stalled, 'sync.waiting': '0' })).state).toBe('available');
      // A primary that does not answer is not judged by its replication.
      expect(step(s, observed({ ...stalled, 'primary.state': 'unreachable' })).state).toBe('available');
    });

    it('stops waiting for it, then makes it synchronous again once it has caught up', () => {
      let s = step(whole(), observed({ ...stalled, 'sync.mode': 'available' }));
      expect([s.state, s.jobs]).toEqual(['unsynchronized.desynchronizing.trying', ['desynchronize']]);
      const since = s.next.context.unsynchronizedSince;
      expect(since).toEqual(expect.any(String));
      // A standby that is gone (not connected) while commits wait is a stall too.
      expect(step(whole(), observed({ ...up, 'sync.waiting': '1', 'sync.wait_ms': '3100' })).state).toBe(
        'unsynchronized.desynchronizing.trying',
      );
      s = step(s.next, { type: 'desynchronized', at: t() });
      expect([s.state, s.jobs]).toEqual(['unsynchronized.waiting', ['observe']]);
      // Still silent, or answering but far behind: not yet.
      expect(step(s.next, observed({ ...stalled, 'sync.names': '', 'sync.waiting': '0' })).state).toBe('unsynchronized.waiting');
      expect(step(s.next, observed({ ...answering, 'sync.standby_flush_lag_bytes': String(64 * 1024 ** 2) })).state).toBe(
        'unsynchronized.waiting',
      );
      s = step(s.next, observed({ ...answering, 'sync.names': '' }));
      expect([s.state, s.jobs]).toEqual(['unsynchronized.resynchronizing', ['synchronize']]);
      // It did not confirm in time: the primary stops waiting for it again, and it is tried once caught up again.
      const again = step(s.next, failed());
      expect([again.state, again.jobs]).toEqual(['unsynchronized.desynchronizing.trying', ['desynchronize']]);
      expect(again.next.context.unsynchronizedSince).toBe(since);
      s = step(s.next, { type: 'synchronized', at: t() });
      expect(s.state).toBe('available');
      expect(s.next.context.unsynchronizedSince).toBeUndefined();
    });

    it('does not promote the standby while it may lack acknowledged commits', () => {
      let s = step(whole(), observed(stalled));
      s = step(s.next, { type: 'desynchronized', at: t() });
      const lost = { ...up, 'primary.state': 'unreachable', 'primary.alive': 'false' };
      expect(step(s.next, observed(lost)).state).toBe('unsynchronized.waiting');
      // Only an operator who accepts losing them promotes it.
      expect(step(s.next, { type: 'switchover', at: t() }).state).toBe('unsynchronized.waiting');
      const forced = step(s.next, { type: 'switchover', at: t(), force: true });
      expect([forced.state, forced.jobs]).toEqual(['failover.fencing.trying', ['fence_primary']]);
      // A step that interrupts it (a password rotation) comes back to it, and fails over no more than it.
      s = step(s.next, { type: 'rotate', at: t() });
      expect(s.state).toBe('rotating.trying');
      expect(step(s.next, observed(lost)).state).toBe('rotating.trying');
      s = step(s.next, { type: 'rotated', at: t() });
      expect([s.state, s.jobs]).toEqual(['unsynchronized.desynchronizing.trying', ['deliver', 'desynchronize']]);
      // A standby lost for good is replaced, and the new one is synchronous.
      s = step(s.next, { type: 'desynchronized', at: t() });
      s = step(s.next, observed({ ...up, 'standby.state': 'failed' }));
      expect([s.state, s.jobs]).toEqual(['replacing.releasing.trying', ['drop_standby']]);
    });

    it('on a strict plan keeps commits waiting: records the stall, and fails over as before', () => {
      const strict = { ...stalled, 'sync.mode': 'strict' };
      let s = step(whole(), observed(strict));
      expect([s.state, s.jobs]).toEqual(['stalled', []]);
      expect(step(s.next, observed(strict)).state).toBe('stalled');
      // Every acknowledged commit is on the standby: a lost primary fails over.
      expect(step(s.next, observed({ ...strict, 'primary.state': 'restarting' })).state).toBe('failover.fencing.trying');
      // A rotation waits for writes to flow, then runs.
      s = step(s.next, { type: 'rotate', at: t() });
      expect(s.state).toBe('stalled');
      s = step(s.next, observed({ ...answering, 'sync.mode': 'strict', 'sync.waiting': '0' }));
      expect([s.state, s.jobs]).toEqual(['rotating.trying', ['rotate_password']]);
    });
  });
});
