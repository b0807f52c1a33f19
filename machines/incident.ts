import { assign, emit, enqueueActions, setup } from 'xstate';
import { job, jobEmitted, type JobEmitted, type JobParams } from './jobs.ts';

/**
 * The life of one incident. `trouble` opens when an entity leaves its healthy state, follows
 * the entity's machine while automation works on it, and resolves when the entity is healthy
 * again. `maintenance` and `retirement` are scheduled: the customer is told at once, a
 * delayed job waits for the time, and the changeover runs then.
 *
 * A human is paged in exactly three cases, each kept with its reason: the condition has no
 * automation (`no_automation`), the entity stays too long in one state (`stuck`, a deadline
 * per state handed in as data), or a job raised an unexpected error (`exception`). The first
 * escalation pages; later ones join it. Resolving an escalated incident resolves the page.
 *
 * Pure, like every machine here: work is emitted as jobs, and time comes in on events.
 */
export const INCIDENT_MACHINE_VERSION = 1;

export type EscalationReason = 'no_automation' | 'stuck' | 'exception';

export interface Escalation {
  reason: EscalationReason;
  detail: string;
  at: string;
}

export type IncidentTask = 'page' | 'unpage' | 'notify' | 'deadline' | 'changeover';

export interface IncidentInput {
  kind: 'trouble' | 'maintenance' | 'retirement';
  /** The entity's state when the incident opened, since when, and how long it may stay there. */
  entityState: string;
  since: string;
  stuckAfter: number;
  /** Seconds until a scheduled changeover. */
  startsIn?: number;
  /** Seconds trouble must last before customers are told: a blip fixed sooner is not news to them. */
  noticeAfter?: number;
}

export interface IncidentContext {
  kind: IncidentInput['kind'];
  entityState: string;
  since: string;
  /** Seconds the entity may stay in `entityState` before a human is paged; 0: no limit. */
  stuckAfter: number;
  escalations: Escalation[];
  startsIn: number;
  /** Snapshots from before it was kept lack it: they tell at once, as they did. */
  noticeAfter?: number;
}

export type IncidentEvent =
  /** The entity's machine moved; `healthy` when it is where it should be. */
  | { type: 'entity.changed'; at: string; state: string; healthy: boolean; stuckAfter: number }
  /** The delayed deadline job came round. */
  | { type: 'deadline'; at: string }
  | { type: 'escalate'; at: string; reason: EscalationReason; detail: string }
  | { type: 'changeover.started'; at: string }
  | { type: 'cancel'; at: string }
  /** An operator closes it: the exception was dealt with, or the condition is accepted. */
  | { type: 'resolve'; at: string };

const elapsedSeconds = (from: string, to: string) => (Date.parse(to) - Date.parse(from)) / 1000;

/**
 * While automation works on the entity (an open incident, a changeover under way): it
 * resolves when the entity is healthy, escalates when it stays in a state past that state's
 * deadline, and an exception or a condition no automation handles pages at once.
 */
const WATCHING = {
  'entity.changed': [{ guard: 'healthy' as const, target: 'resolved' }, { actions: ['follow' as const, 'armDeadline' as const] }],
  deadline: [{ guard: 'overdue' as const, target: 'escalated', actions: 'escalateStuck' as const }, { actions: 'armDeadline' as const }],
  escalate: { target: 'escalated', actions: 'record' as const },
};

export const incidentMachine = setup({
  types: {
    context: {} as IncidentContext,
    events: {} as IncidentEvent,
    emitted: {} as JobEmitted<IncidentTask>,
    input: {} as IncidentInput,
  },
  actions: {
    job: emit((_, params: JobParams<IncidentTask>) => jobEmitted(params)),
    follow: assign(({ context, event }) =>
      event.type === 'entity.changed' && event.state !== context.entityState
        ? { entityState: event.state, since: event.at, stuckAfter: event.stuckAfter }
        : {},
    ),
    /** Ask to be woken when the entity's time in its state runs out. */
    armDeadline: enqueueActions(({ context, event, enqueue }) => {
      if (context.stuckAfter <= 0) return;
      const now = 'at' in event && typeof event.at === 'string' ? event.at : context.since;
      const left = Math.ceil(context.stuckAfter - elapsedSeconds(context.since, now));
      enqueue.emit({ type: 'job', task: 'deadline', delaySeconds: Math.max(left, 1) });
    }),
    escalateStuck: assign({
      escalations: ({ context, event }) => [
        ...context.escalations,
        {
          reason: 'stuck' as const,
          detail: `${context.entityState} for more than ${context.stuckAfter} s`,
          at: 'at' in event ? String(event.at) : context.since,
        },
      ],
    }),
    record: assign({
      escalations: ({ context, event }) =>
        event.type === 'escalate'
          ? [...context.escalations, { reason: event.reason, detail: event.detail.slice(0, 1000), at: event.at }]
          : context.escalations,
    }),
    unpageIfPaged: enqueueActions(({ context, enqueue }) => {
      if (context.escalations.length > 0) enqueue.emit({ type: 'job', task: 'unpage' });
    }),
    /** Trouble is told once it has lasted its grace; the notify job finds out whether it still concerns anyone. */
    notifyAfterGrace: emit(({ context }) => jobEmitted({ task: 'notify' as const, delaySeconds: context.noticeAfter })),
    scheduleChangeover: emit(({ context }) => ({
      type: 'job' as const,
      task: 'changeover' as const,
      delaySeconds: Math.max(context.startsIn, 0),
    })),
  },
  guards: {
    scheduled: ({ context }) => context.kind !== 'trouble',
    healthy: ({ event }) => event.type === 'entity.changed' && event.healthy,
    overdue: ({ context, event }) =>
      event.type === 'deadline' && context.stuckAfter > 0 && elapsedSeconds(context.since, event.at) >= context.stuckAfter,
  },
}).createMachine({
  id: 'incident',
  context: ({ input }) => ({
    kind: input.kind,
    entityState: input.entityState,
    since: input.since,
    stuckAfter: input.stuckAfter,
    escalations: [],
    startsIn: input.startsIn ?? 0,
    noticeAfter: input.noticeAfter ?? 0,
  }),
  initial: 'opening',
  on: { resolve: '.resolved' },
  states: {
    opening: {
      always: [{ guard: 'scheduled', target: 'scheduled' }, { target: 'open' }],
    },
    /** Automation is working on it; nobody is paged yet. */
    open: {
      entry: ['armDeadline', 'notifyAfterGrace'],
      on: WATCHING,
    },
    /** A human is paged; automation keeps working, and later reasons join the page. */
    escalated: {
      entry: job('page'),
      on: {
        'entity.changed': [{ guard: 'healthy', target: 'resolved' }, { actions: 'follow' }],
        escalate: { actions: 'record' },
      },
    },
    /** The customer is told now; the changeover waits for its time in a delayed job. */
    scheduled: {
      entry: [job('notify'), 'scheduleChangeover'],
      on: {
        'changeover.started': 'changing',
        cancel: 'resolved',
      },
    },
    /** The changeover runs; trouble on the entity meanwhile belongs to it. */
    changing: {
      entry: 'armDeadline',
      on: WATCHING,
    },
    resolved: {
      type: 'final',
      entry: ['unpageIfPaged', job('notify')],
    },
  },
});
