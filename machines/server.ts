import { and, assign, emit, not, setup } from 'xstate';
import { backoff, type Backoff } from '../src/backoff.ts';
import { job, jobEmitted, type JobEmitted, type JobParams } from './jobs.ts';
import type { StateMeta } from './policy.ts';
import type { ObservedEvent, ServerObservation } from './observations.ts';

/**
 * The life of one Postgres server, always trying to get back to `available`.
 *
 * Pure: what the machine wants done it emits as `job` events, which the runner enqueues in
 * the same transaction that stores the new snapshot. Waits that must survive a restart are
 * delayed jobs, never `after:` timers. Events carry their own times (`at`, ISO strings) so
 * the machine can tell a fresh observation from one it has already seen.
 */
export const SERVER_MACHINE_VERSION = 1;

/** Restarts in a row before the server counts as failed. */
export const MAX_RESTARTS = 3;
/**
 * Failed probes in a row of a server whose process is alive before it counts as hung and is
 * restarted (or, for a primary with a standby, failed over). Observations carry their own
 * count (`hang_probes`, from PGFLEET_HANG_PROBES); this is the default.
 */
export const UNREACHABLE_PROBES = 3;
/** Seconds between the probes of a server that stopped answering. */
export const REPROBE_SECONDS = 0.5;
/** Observations in `starting` that find it down before the start counts as failed. */
export const STARTING_PROBES = 10;

export type ServerTask =
  'provision' | 'initialize' | 'start' | 'restart' | 'restart_pool' | 'maintain' | 'fence' | 'rejoin' | 'observe' | 'destroy';

export type ServerEvent =
  | ObservedEvent<ServerObservation>
  | { type: 'provisioned'; at: string }
  | { type: 'initialized'; at: string }
  | { type: 'started'; at: string }
  | { type: 'start.failed'; at: string; error: string }
  | { type: 'restarted'; at: string }
  | { type: 'restart.failed'; at: string; error: string }
  /** Another server takes over: this one must never accept a write again. */
  | { type: 'fence'; at: string }
  | { type: 'fenced'; at: string }
  /** A fenced former primary comes back as a standby of the server that took over. */
  | { type: 'rejoin'; at: string }
  | { type: 'rejoined'; at: string }
  /** Planned maintenance: restart it now, on purpose. */
  | { type: 'maintain'; at: string }
  | { type: 'delete'; at: string }
  | { type: 'destroyed'; at: string };

export interface ServerContext {
  /** Time of the newest observation the machine has acted on. */
  seenAt: string;
  /** Time the last start or restart finished; only later observations judge it. */
  startedAt: string;
  restarts: number;
  failures: number;
  probes: number;
  lastError: string | undefined;
}

/** Backoff before the nth retry of a failed server: 5 s, 10 s, 20 s … at most 10 minutes. */
const FAILED_RETRY_SECONDS: Backoff = { first: 5, most: 600 };

/**
 * While a state waits for its job's report, each fresh observation asks for the job again.
 * Jobs are unique per entity and task while pending, so this changes nothing when the job
 * is there, and puts it back when it fell out (a worker died, an operator deleted it).
 */
const awaiting = (task: ServerTask) => ({ guard: and(['fresh', not('reachable')]), actions: ['see' as const, job(task)] });

export const serverMachine = setup({
  types: {
    context: {} as ServerContext,
    events: {} as ServerEvent,
    emitted: {} as JobEmitted<ServerTask>,
  },
  actions: {
    job: emit((_, params: JobParams<ServerTask>) => jobEmitted(params)),
    retryFailed: emit(({ context }) => ({
      type: 'job' as const,
      task: 'restart' as const,
      delaySeconds: backoff(FAILED_RETRY_SECONDS, context.failures - 1),
    })),
    see: assign({ seenAt: ({ event }) => event.at }),
    markStarted: assign({ startedAt: ({ event }) => event.at, probes: 0 }),
    countRestart: assign({ restarts: ({ context }) => context.restarts + 1 }),
    countFailure: assign({ failures: ({ context }) => context.failures + 1 }),
    countProbe: assign({ probes: ({ context }) => context.probes + 1 }),
    recordError: assign({ lastError: ({ event }) => ('error' in event ? event.error : undefined) }),
    healthy: assign({ restarts: 0, failures: 0, probes: 0, lastError: undefined }),
  },
  guards: {
    /** An observation newer than any the machine has acted on. */
    fresh: ({ context, event }) => event.type === 'observed' && event.at > context.seenAt,
    /** Taken after the last start finished, so it judges that start. */
    sinceStart: ({ context, event }) => event.type === 'observed' && event.at > context.startedAt,
    reachable: ({ event }) => event.type === 'observed' && event.obs.reachable === true,
    processDead: ({ event }) => event.type === 'observed' && event.obs.alive === false,
    /** The connection pooler in front of it is not running (a server without one reports nothing). */
    poolDead: ({ event }) => event.type === 'observed' && event.obs.poolAlive === false,
    /**
     * The run of failed probes is long enough: counted by the observer where it reports the
     * count (`failed_probes`), else by the observations this machine has seen.
     */
    probesSpent: ({ context, event }, params: { limit?: number }) => {
      const obs = event.type === 'observed' ? event.obs : undefined;
      const limit = params.limit ?? (obs?.hangProbes || UNREACHABLE_PROBES);
      return params.limit === undefined && obs?.failedProbes !== undefined ? obs.failedProbes >= limit : context.probes + 1 >= limit;
    },
    restartsLeft: ({ context }) => context.restarts < MAX_RESTARTS,
  },
}).createMachine({
  id: 'server',
  initial: 'provisioning',
  context: { seenAt: '', startedAt: '', restarts: 0, failures: 0, probes: 0, lastError: undefined },
  on: {
    delete: { target: '.deleting' },
    fence: { target: '.fencing' },
  },
  states: {
    provisioning: {
      entry: job('provision'),
      on: { provisioned: 'initializing', observed: awaiting('provision') },
    },
    initializing: {
      entry: job('initialize'),
      on: { initialized: 'starting', observed: awaiting('initialize') },
    },
    /** Nested states of a start: `running` until the start job reports, then `verifying`. */
    starting: {
      initial: 'running',
      states: {
        running: {
          entry: job('start'),
          on: {
            started: { target: 'verifying', actions: 'markStarted' },
            'start.failed': { target: '#server.failed', actions: 'recordError' },
            observed: awaiting('start'),
          },
        },
        verifying: {
          entry: job('observe'),
          on: {
            observed: [
              { guard: and(['fresh', 'reachable']), target: '#server.available', actions: ['see', 'healthy'] },
              {
                guard: and(['fresh', 'sinceStart', { type: 'probesSpent', params: { limit: STARTING_PROBES } }]),
                target: '#server.failed',
                actions: ['see', assign({ lastError: 'it started but never accepted connections' })],
              },
              { guard: and(['fresh', 'sinceStart']), actions: ['see', 'countProbe', job('observe', 1)] },
            ],
          },
        },
      },
    },
    available: {
      tags: ['healthy'],
      on: {
        maintain: 'maintaining',
        observed: [
          { guard: and(['fresh', not('reachable')]), target: 'unreachable', actions: 'see' },
          // Postgres answers but its pooler is gone: only the pooler is started again.
          { guard: and(['fresh', 'poolDead']), actions: ['see', job('restart_pool')] },
          { guard: 'fresh', actions: 'see' },
        ],
      },
    },
    /**
     * The probe that brought it here counts as the first of a run of failed probes. A server
     * that does not answer gets a minute of automation before a human is paged.
     */
    unreachable: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 60, trouble: 'server unreachable' } satisfies StateMeta,
      entry: [assign({ probes: 1 }), job('observe', REPROBE_SECONDS)],
      on: {
        observed: [
          { guard: and(['fresh', 'reachable']), target: 'available', actions: ['see', 'healthy'] },
          { guard: and(['fresh', 'processDead']), target: 'restarting', actions: 'see' },
          { guard: and(['fresh', { type: 'probesSpent', params: {} }]), target: 'restarting', actions: 'see' },
          { guard: 'fresh', actions: ['see', 'countProbe', job('observe', REPROBE_SECONDS)] },
        ],
      },
    },
    restarting: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 180, trouble: 'server restarting' } satisfies StateMeta,
      initial: 'running',
      entry: 'countRestart',
      states: {
        running: {
          entry: job('restart'),
          on: {
            restarted: { target: 'verifying', actions: 'markStarted' },
            'restart.failed': [
              { guard: 'restartsLeft', target: '#server.restarting', reenter: true, actions: 'recordError' },
              { target: '#server.failed', actions: 'recordError' },
            ],
            observed: awaiting('restart'),
          },
        },
        verifying: {
          entry: job('observe'),
          on: {
            observed: [
              {
                guard: and(['fresh', 'sinceStart', not('reachable'), 'restartsLeft']),
                target: '#server.restarting',
                reenter: true,
                actions: 'see',
              },
              {
                guard: and(['fresh', 'sinceStart', not('reachable')]),
                target: '#server.failed',
                actions: ['see', assign({ lastError: 'restarts did not bring it back' })],
              },
            ],
          },
        },
      },
      on: {
        observed: [
          { guard: and(['fresh', 'reachable']), target: 'available', actions: ['see', 'healthy'] },
          { guard: 'fresh', actions: 'see' },
        ],
      },
    },
    /** A planned restart: the server goes down on purpose, so this is not trouble, unless it lasts. */
    maintaining: {
      meta: { pageAfter: 600 } satisfies StateMeta,
      initial: 'running',
      states: {
        running: {
          entry: job('maintain'),
          on: {
            restarted: { target: 'verifying', actions: 'markStarted' },
            'restart.failed': { target: '#server.restarting', actions: 'recordError' },
            observed: awaiting('maintain'),
          },
        },
        verifying: {
          entry: job('observe'),
          on: {
            observed: [
              { guard: and(['fresh', 'reachable']), target: '#server.available', actions: ['see', 'healthy'] },
              { guard: and(['fresh', 'sinceStart']), target: '#server.restarting', actions: 'see' },
            ],
          },
        },
      },
    },
    /**
     * Restarts did not help. Keep trying with backoff and change nothing else: the data
     * directory may hold the only copy of someone's data, so no automation deletes or
     * re-initialises it. Replacement from the archive comes with high availability. What
     * restarts cannot fix is someone's problem at once, after a minute to be sure.
     */
    failed: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 60, trouble: 'restart failing' } satisfies StateMeta,
      initial: 'waiting',
      states: {
        waiting: {
          entry: ['countFailure', 'retryFailed'],
          on: {
            restarted: { target: 'verifying', actions: 'markStarted' },
            'restart.failed': { target: 'waiting', reenter: true, actions: 'recordError' },
            observed: { guard: and(['fresh', not('reachable')]), actions: ['see', 'retryFailed'] },
          },
        },
        verifying: {
          entry: job('observe'),
          on: {
            observed: [{ guard: and(['fresh', 'sinceStart', not('reachable')]), target: 'waiting', actions: 'see' }],
          },
        },
      },
      on: {
        observed: [
          { guard: and(['fresh', 'reachable']), target: 'available', actions: ['see', 'healthy'] },
          { guard: 'fresh', actions: 'see' },
        ],
      },
    },
    /**
     * A failover took this server's place. Its jobs run one at a time, so the fence job runs
     * after any restart under way and stops what that started; nothing here restarts it.
     */
    fencing: {
      tags: ['gone', 'urgent'],
      entry: job('fence'),
      on: { fenced: 'fenced', fence: {}, observed: { guard: 'fresh', actions: ['see', job('fence')] } },
    },
    /** Stopped for good, its data kept: to rejoin as a standby, or to be deleted. */
    fenced: {
      tags: ['gone'],
      on: { fence: {}, rejoin: 'rejoining', observed: { guard: 'fresh', actions: 'see' } },
    },
    /** Rewound (or rebuilt) into a standby of its new leader and started; then verified. */
    rejoining: {
      tags: ['urgent'],
      entry: job('rejoin'),
      on: {
        rejoined: { target: '#server.starting.verifying', actions: 'markStarted' },
        rejoin: {},
        observed: awaiting('rejoin'),
      },
    },
    deleting: {
      tags: ['gone'],
      entry: job('destroy'),
      on: {
        destroyed: 'deleted',
        delete: {},
        fence: {},
        observed: { guard: 'fresh', actions: ['see', job('destroy')] },
      },
    },
    deleted: { type: 'final', tags: ['gone'] },
  },
});
