import { describe, expect, it } from 'vitest';
import { initialTransition, transition, type SnapshotFrom, type StateValue } from 'xstate';
import {
  MAX_RESTARTS,
  serverMachine,
  STARTING_PROBES,
  UNREACHABLE_PROBES,
  type ServerContext,
  type ServerEvent,
} from '../../machines/server.ts';
import { parseServerObservation } from '../../machines/observations.ts';
import { emittedJobs, statePath } from '../../src/runner/runner.ts';

type Snapshot = SnapshotFrom<typeof serverMachine>;

const base: ServerContext = { seenAt: '', startedAt: '', restarts: 0, failures: 0, probes: 0, lastError: undefined };
let clock = 0;
/** Strictly increasing fixed-width times, like the database's. */
const t = () => new Date(Date.UTC(2026, 0, 1) + ++clock * 1000).toISOString();

function at(value: StateValue, context: Partial<ServerContext> = {}): Snapshot {
  return serverMachine.resolveState({ value, context: { ...base, ...context } });
}

function step(snapshot: Snapshot, event: ServerEvent) {
  const [next, actions] = transition(serverMachine, snapshot, event);
  return {
    next,
    state: statePath(next.value),
    jobs: emittedJobs(actions as never).map((j) => j.task + (j.delaySeconds ? `+${j.delaySeconds}s` : '')),
  };
}

const up = (): ServerEvent => ({ type: 'observed', at: t(), obs: parseServerObservation({ reachable: 'true', alive: 'true' }) });
const down = (alive = 'true'): ServerEvent => ({ type: 'observed', at: t(), obs: parseServerObservation({ reachable: 'false', alive }) });

describe('server machine', () => {
  it('starts in provisioning and asks for a provision job', () => {
    const [snapshot, actions] = initialTransition(serverMachine);
    expect(statePath(snapshot.value)).toBe('provisioning');
    expect(emittedJobs(actions as never).map((j) => j.task)).toEqual(['provision']);
  });

  it('walks provisioning → initializing → starting → available', () => {
    let s = step(at('provisioning'), { type: 'provisioned', at: t() });
    expect([s.state, s.jobs]).toEqual(['initializing', ['initialize']]);
    s = step(s.next, { type: 'initialized', at: t() });
    expect([s.state, s.jobs]).toEqual(['starting.running', ['start']]);
    s = step(s.next, { type: 'started', at: t() });
    expect([s.state, s.jobs]).toEqual(['starting.verifying', ['observe']]);
    s = step(s.next, up());
    expect([s.state, s.jobs]).toEqual(['available', []]);
  });

  it('judges a start only by observations taken after it', () => {
    const before = down();
    const s = step(at({ starting: 'verifying' }, { startedAt: t() }), before);
    expect(s.state).toBe('starting.verifying');
    expect(s.jobs).toEqual([]);
  });

  it('gives up on a start that never accepts connections', () => {
    const s = step(at({ starting: 'verifying' }, { probes: STARTING_PROBES - 1 }), down());
    expect(s.state).toBe('failed.waiting');
    expect(s.next.context.lastError).toMatch(/never accepted/);
  });

  it('starts only the pooler again when Postgres answers but its pooler is dead, and stays available', () => {
    const poolDead = (): ServerEvent => ({
      type: 'observed',
      at: t(),
      obs: parseServerObservation({ reachable: 'true', alive: 'true', pool_alive: 'false' }),
    });
    let s = step(at('available'), poolDead());
    expect([s.state, s.jobs]).toEqual(['available', ['restart_pool']]);
    // Each fresh observation asks again (a pending job is not doubled); a stale one does not.
    const seen = s.next.context.seenAt;
    s = step(s.next, poolDead());
    expect([s.state, s.jobs]).toEqual(['available', ['restart_pool']]);
    s = step(s.next, { type: 'observed', at: seen, obs: parseServerObservation({ reachable: 'true', pool_alive: 'false' }) });
    expect(s.jobs).toEqual([]);
    s = step(s.next, { type: 'observed', at: t(), obs: parseServerObservation({ reachable: 'true', alive: 'true', pool_alive: 'true' }) });
    expect([s.state, s.jobs]).toEqual(['available', []]);
  });

  it('leaves the pooler of a server that does not answer to the restart of the server', () => {
    const s = step(at('available'), {
      type: 'observed',
      at: t(),
      obs: parseServerObservation({ reachable: 'false', alive: 'false', pool_alive: 'false' }),
    });
    expect([s.state, s.jobs]).toEqual(['unreachable', ['observe+0.5s']]);
  });

  it('never starts the pooler of a fenced server', () => {
    const s = step(at('fenced'), {
      type: 'observed',
      at: t(),
      obs: parseServerObservation({ reachable: 'false', alive: 'false', pool_alive: 'false' }),
    });
    expect([s.state, s.jobs]).toEqual(['fenced', []]);
  });

  it('goes unreachable on a failed probe, then restarts at once when the process is dead', () => {
    let s = step(at('available'), down());
    expect([s.state, s.jobs]).toEqual(['unreachable', ['observe+0.5s']]);
    s = step(s.next, down('false'));
    expect([s.state, s.jobs]).toEqual(['restarting.running', ['restart']]);
    expect(s.next.context.restarts).toBe(1);
    s = step(s.next, { type: 'restarted', at: t() });
    expect([s.state, s.jobs]).toEqual(['restarting.verifying', ['observe']]);
    s = step(s.next, up());
    expect(s.state).toBe('available');
    expect(s.next.context.restarts).toBe(0);
  });

  it('counts a live process as hung after a run of failed probes, the first one included', () => {
    let s = step(at('available'), down());
    for (let i = 2; i < UNREACHABLE_PROBES; i++) {
      s = step(s.next, down());
      expect(s.state).toBe('unreachable');
    }
    s = step(s.next, down());
    expect(s.state).toBe('restarting.running');
  });

  it('takes the length of that run from the observation', () => {
    const hang = (probes: number): ServerEvent => ({
      type: 'observed',
      at: t(),
      obs: parseServerObservation({ reachable: 'false', alive: 'true', hang_probes: String(probes) }),
    });
    let s = step(at('available'), hang(5));
    for (let i = 2; i < 5; i++) {
      s = step(s.next, hang(5));
      expect(s.state).toBe('unreachable');
    }
    expect(step(s.next, hang(5)).state).toBe('restarting.running');
    expect(step(step(at('available'), hang(2)).next, hang(2)).state).toBe('restarting.running');
  });

  it("goes by the observer's own count of failed probes, which sees probes the machine missed", () => {
    const failed = (n: number): ServerEvent => ({
      type: 'observed',
      at: t(),
      obs: parseServerObservation({ reachable: 'false', alive: 'true', hang_probes: '3', failed_probes: String(n) }),
    });
    const s = step(at('available'), failed(1));
    expect(s.state).toBe('unreachable');
    // Two more probes failed before the machine saw the next observation.
    expect(step(s.next, failed(3)).state).toBe('restarting.running');
    expect(step(s.next, failed(2)).state).toBe('unreachable');
  });

  it('comes back from unreachable without a restart when the server answers again', () => {
    const s = step(at('unreachable'), up());
    expect([s.state, s.jobs]).toEqual(['available', []]);
  });

  it('ignores an observation it has already acted on', () => {
    const seen = t();
    const s = step(at('available', { seenAt: seen }), { type: 'observed', at: seen, obs: parseServerObservation({ reachable: 'false' }) });
    expect(s.state).toBe('available');
  });

  it('restarts again when a restart does not bring it back, then fails with backoff', () => {
    let s = step(at({ restarting: 'verifying' }, { restarts: 1, startedAt: t() }), down());
    expect([s.state, s.jobs]).toEqual(['restarting.running', ['restart']]);
    expect(s.next.context.restarts).toBe(2);
    s = step(at({ restarting: 'verifying' }, { restarts: MAX_RESTARTS, startedAt: t() }), down());
    expect([s.state, s.jobs]).toEqual(['failed.waiting', ['restart+5s']]);
    s = step(at({ restarting: 'running' }, { restarts: MAX_RESTARTS }), { type: 'restart.failed', at: t(), error: 'boom' });
    expect(s.state).toBe('failed.waiting');
    expect(s.next.context.lastError).toBe('boom');
  });

  it('keeps retrying a failed server with growing backoff and changes nothing else', () => {
    let s = step(at({ failed: 'waiting' }, { failures: 1 }), { type: 'restarted', at: t() });
    expect([s.state, s.jobs]).toEqual(['failed.verifying', ['observe']]);
    s = step(s.next, down());
    expect([s.state, s.jobs]).toEqual(['failed.waiting', ['restart+10s']]);
    expect(s.next.context.failures).toBe(2);
    const late = step(at({ failed: 'waiting' }, { failures: 12 }), { type: 'restart.failed', at: t(), error: 'no' });
    expect(late.jobs).toEqual(['restart+600s']);
    for (const snapshot of [s.next, late.next]) {
      const all = [up(), down()].flatMap((e) => step(snapshot, e).jobs);
      expect(all.every((j) => j.startsWith('restart') || j.startsWith('observe'))).toBe(true);
    }
  });

  it('recovers from failed when an observation finds it healthy', () => {
    const s = step(at({ failed: 'waiting' }, { failures: 4 }), up());
    expect(s.state).toBe('available');
    expect(s.next.context.failures).toBe(0);
  });

  it('asks again for the job it waits on when an observation comes and the job may have fallen out', () => {
    expect(step(at('provisioning'), down()).jobs).toEqual(['provision']);
    expect(step(at('initializing'), down()).jobs).toEqual(['initialize']);
    expect(step(at({ starting: 'running' }), down()).jobs).toEqual(['start']);
    expect(step(at({ restarting: 'running' }), down()).jobs).toEqual(['restart']);
    expect(step(at('deleting'), down()).jobs).toEqual(['destroy']);
  });

  it('deletes from any state and finishes', () => {
    for (const value of ['provisioning', 'available', { restarting: 'running' }, { failed: 'waiting' }] as StateValue[]) {
      const s = step(at(value), { type: 'delete', at: t() });
      expect([s.state, s.jobs]).toEqual(['deleting', ['destroy']]);
    }
    const done = step(at('deleting'), { type: 'destroyed', at: t() });
    expect(done.state).toBe('deleted');
    expect(done.next.status).toBe('done');
  });

  it('is fenced from any live state, and then nothing restarts it', () => {
    let s = step(at({ restarting: 'running' }), { type: 'fence', at: t() });
    expect([s.state, s.jobs]).toEqual(['fencing', ['fence']]);
    s = step(s.next, { type: 'restarted', at: t() });
    expect([s.state, s.jobs]).toEqual(['fencing', []]);
    s = step(s.next, { type: 'fenced', at: t() });
    expect([s.state, s.jobs]).toEqual(['fenced', []]);
    expect(step(s.next, down('false')).jobs).toEqual([]);
    // A server being deleted is not fenced.
    expect(step(at('deleting'), { type: 'fence', at: t() }).state).toBe('deleting');
  });

  it('rejoins from fenced as a standby, then is verified like a start', () => {
    expect(step(at('available'), { type: 'rejoin', at: t() }).state).toBe('available');
    let s = step(at('fenced'), { type: 'rejoin', at: t() });
    expect([s.state, s.jobs]).toEqual(['rejoining', ['rejoin']]);
    expect(step(s.next, down('false')).jobs).toEqual(['rejoin']);
    s = step(s.next, { type: 'rejoined', at: t() });
    expect([s.state, s.jobs]).toEqual(['starting.verifying', ['observe']]);
    expect(step(s.next, up()).state).toBe('available');
  });
});
