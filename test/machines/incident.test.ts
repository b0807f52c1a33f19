import { describe, expect, it } from 'vitest';
import { initialTransition, transition, type SnapshotFrom } from 'xstate';
import { incidentMachine, type IncidentEvent, type IncidentInput } from '../../machines/incident.ts';
import { emittedJobs, statePath } from '../../src/runner/runner.ts';

type Snapshot = SnapshotFrom<typeof incidentMachine>;

const T0 = Date.UTC(2026, 0, 1);
const at = (seconds: number) => new Date(T0 + seconds * 1000).toISOString();
const trouble: IncidentInput = { kind: 'trouble', entityState: 'unreachable', since: at(0), stuckAfter: 60 };

function start(input: IncidentInput) {
  const [next, actions] = initialTransition(incidentMachine, input);
  return { next, state: statePath(next.value), jobs: jobs(actions) };
}
function jobs(actions: unknown) {
  return emittedJobs(actions as never).map((j) => j.task + (j.delaySeconds ? `+${j.delaySeconds}s` : ''));
}
function step(snapshot: Snapshot, event: IncidentEvent) {
  const [next, actions] = transition(incidentMachine, snapshot, event);
  return { next, state: statePath(next.value), jobs: jobs(actions) };
}
const changed = (seconds: number, state: string, healthy = false, stuckAfter = 60): IncidentEvent => ({
  type: 'entity.changed',
  at: at(seconds),
  state,
  healthy,
  stuckAfter,
});

describe('incident machine', () => {
  it('opens, tells the customer and arms the deadline of the entity’s state', () => {
    expect(start(trouble)).toMatchObject({ state: 'open', jobs: ['deadline+60s', 'notify'] });
  });

  it('tells the customer of trouble only after its grace, and of its end at once', () => {
    const s = start({ ...trouble, noticeAfter: 30 });
    expect(s.jobs).toEqual(['deadline+60s', 'notify+30s']);
    expect(step(s.next, changed(8, 'available', true)).jobs).toEqual(['notify']);
  });

  it('follows the entity, re-arming the deadline for each new state, and resolves when it is healthy', () => {
    let s = start(trouble);
    s = step(s.next, changed(10, 'restarting.running', false, 180));
    expect([s.state, s.jobs]).toEqual(['open', ['deadline+180s']]);
    // A deadline that comes for an earlier state finds time left and sleeps again.
    s = step(s.next, { type: 'deadline', at: at(60) });
    expect([s.state, s.jobs]).toEqual(['open', ['deadline+130s']]);
    s = step(s.next, changed(20, 'available', true));
    expect([s.state, s.jobs]).toEqual(['resolved', ['notify']]);
    expect(s.next.status).toBe('done');
  });

  it('escalates as stuck when the entity overstays its state, pages once, and unpages on resolve', () => {
    let s = step(start(trouble).next, { type: 'deadline', at: at(61) });
    expect([s.state, s.jobs]).toEqual(['escalated', ['page']]);
    expect(s.next.context.escalations).toEqual([{ reason: 'stuck', detail: 'unreachable for more than 60 s', at: at(61) }]);
    // Later reasons join the page that is out.
    s = step(s.next, { type: 'escalate', at: at(70), reason: 'exception', detail: 'restart: boom' });
    expect([s.state, s.jobs]).toEqual(['escalated', []]);
    expect(s.next.context.escalations.map((e) => e.reason)).toEqual(['stuck', 'exception']);
    s = step(s.next, changed(90, 'failed.waiting'));
    expect(s.state).toBe('escalated');
    s = step(s.next, changed(120, 'available', true));
    expect([s.state, s.jobs]).toEqual(['resolved', ['unpage', 'notify']]);
  });

  it('pages at once for an exception or a condition without automation', () => {
    for (const reason of ['exception', 'no_automation'] as const) {
      const s = step(start(trouble).next, { type: 'escalate', at: at(1), reason, detail: 'x' });
      expect([s.state, s.jobs]).toEqual(['escalated', ['page']]);
    }
  });

  it('has no deadline for a state without one', () => {
    expect(start({ ...trouble, stuckAfter: 0 }).jobs).toEqual(['notify']);
  });

  it('an operator can resolve it; an unpaged incident sends no resolve', () => {
    expect(step(start(trouble).next, { type: 'resolve', at: at(5) }).jobs).toEqual(['notify']);
  });

  it('schedules maintenance: the customer is told now, the changeover waits for its time, then it follows the server', () => {
    let s = start({ kind: 'maintenance', entityState: 'available', since: at(0), stuckAfter: 600, startsIn: 3600 });
    expect([s.state, s.jobs]).toEqual(['scheduled', ['notify', 'changeover+3600s']]);
    // Trouble before the time does not belong to the maintenance.
    expect(step(s.next, changed(10, 'unreachable')).state).toBe('scheduled');
    s = step(s.next, { type: 'changeover.started', at: at(3600) });
    expect(s.state).toBe('changing');
    s = step(s.next, changed(3601, 'maintaining.running', false, 600));
    expect([s.state, s.jobs]).toEqual(['changing', ['deadline+600s']]);
    s = step(s.next, changed(3605, 'available', true));
    expect([s.state, s.jobs]).toEqual(['resolved', ['notify']]);
  });
});
