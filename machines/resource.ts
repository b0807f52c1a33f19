import { and, assign, emit, enqueueActions, setup } from 'xstate';
import { backoff, type Backoff } from '../src/backoff.ts';
import { job, jobEmitted, type JobEmitted, type JobParams } from './jobs.ts';
import type { StateMeta } from './policy.ts';
import type { ObservedEvent, ResourceObservation, ServerRole } from './observations.ts';
import { caughtUp, syncFlowing, syncStalled } from './synchronous.ts';

/**
 * The life of one customer database (a resource): created on a server, changed between
 * plans, deprovisioned. The servers under it have machines of their own; this one decides
 * what the customer's database needs and waits on its servers through observations.
 *
 * Pure, like the server machine: work is emitted as `job` events that the runner enqueues
 * in the transaction that stores the snapshot. Every step that touches the world is a job
 * that reports `step.failed` when it cannot finish; the step is retried with backoff, and
 * after MAX_STEP_RETRIES it moves to its `failed` substate, which an operator sees in the
 * state's name, and keeps retrying slowly. Nothing is ever given up on silently.
 */
export const RESOURCE_MACHINE_VERSION = 1;

/** Quick retries of a step before it shows as failed. */
export const MAX_STEP_RETRIES = 5;

/**
 * States in which a lost primary is failed over (`primaryLost`), or already is being. In any
 * other the standby may not be synchronous yet (it is being rejoined or built), so nothing
 * promotes it, and the primary's own machine must restart it.
 */
export const RESOURCE_FAILOVER_STATES: readonly string[] = ['available', 'rotating', 'syncing', 'failover'];

export type ResourceTask =
  | 'place'
  | 'create_tenant'
  | 'place_standby'
  | 'synchronize'
  | 'desynchronize'
  | 'fence_primary'
  | 'promote'
  | 'restore_standby'
  | 'drop_standby'
  | 'apply_plan'
  | 'move'
  | 'activate'
  | 'cleanup'
  | 'deliver'
  | 'drop_tenant'
  | 'observe'
  | 'rotate_password'
  | 'sync_credentials';

export type ResourceEvent =
  | ObservedEvent<ResourceObservation>
  | { type: 'placed'; at: string }
  /** `standby` when the plan wants a synchronous standby before the database is ready. */
  | { type: 'tenant.created'; at: string; standby?: boolean }
  | { type: 'synchronized'; at: string }
  /** The primary no longer waits for its standby. */
  | { type: 'desynchronized'; at: string }
  | { type: 'fencing'; at: string }
  /**
   * An operator's switchover: the standby takes over while the primary is still fine.
   * `force` promotes a standby that may lack acknowledged commits (the database runs
   * without a synchronous copy): the operator accepts losing them.
   */
  | { type: 'switchover'; at: string; force?: boolean }
  | { type: 'promoted'; at: string }
  | { type: 'step.failed'; at: string; error: string }
  /**
   * The platform changed the plan; `move` when the new plan needs another kind of server,
   * `standby` when it wants a synchronous standby the old one did not have, or no longer does.
   */
  | { type: 'change_plan'; at: string; plan: string; move: boolean; standby?: 'add' | 'drop' }
  | { type: 'standby.dropped'; at: string }
  | { type: 'applied'; at: string }
  | { type: 'moved'; at: string }
  | { type: 'activated'; at: string }
  | { type: 'cleaned'; at: string }
  /** The platform was answered before the database was ready: hand it the config later. */
  | { type: 'deferred'; at: string }
  | { type: 'delivered'; at: string }
  | { type: 'delivery.failed'; at: string; error: string }
  /** A new password for the owner was stored as pending: set it on the server, then hand it over. */
  | { type: 'rotate'; at: string }
  | { type: 'rotated'; at: string }
  /** Named credentials were asked to be made, rotated or destroyed. */
  | { type: 'credentials'; at: string }
  | { type: 'credentials.synced'; at: string }
  | { type: 'deprovision'; at: string }
  | { type: 'dropped'; at: string };

export interface ResourceContext {
  seenAt: string;
  /** Failures of the current step (or of the current delivery) in a row. */
  failures: number;
  lastError: string | undefined;
  /** The platform still needs the config: it was answered before the URL was final. */
  deliver: boolean;
  deliveryFailures: number;
  /** A rotation of the owner's password is under way, and outlasts a failover that interrupts it. */
  rotating?: boolean;
  /** Named credentials are being made agree with the control database, and outlast a failover too. */
  syncing?: boolean;
  /**
   * Since when the primary may acknowledge commits its standby does not have (it was told
   * to stop waiting for a stalled one): until the standby is synchronous again, it must not
   * be promoted, and the database comes back to this when a step interrupts it.
   */
  unsynchronizedSince?: string;
}

/** Backoff before retry n of a step: 1, 2, 4, 8, 16 s, then from a minute up to an hour. */
export function stepBackoffSeconds(failures: number): number {
  if (failures <= 0) return 0;
  if (failures <= MAX_STEP_RETRIES) return backoff({ first: 1, most: 3600 }, failures - 1);
  return backoff({ first: 60, most: 3600 }, failures - MAX_STEP_RETRIES - 1);
}

/** Backoff before the nth retry of handing the config to the platform: 2 s doubling to an hour. */
const DELIVERY_RETRY_SECONDS: Backoff = { first: 2, most: 3600 };

const ERROR_LIMIT = 1000;

/**
 * One step of work: `trying` runs the task's job and retries it with backoff; after
 * MAX_STEP_RETRIES failures the step shows as `failed` and retries slowly until it works.
 * A fresh observation asks for the job again, which puts back a job that fell out and
 * changes nothing when it is pending (jobs are unique per entity and task). A step failed
 * for good is trouble, and a human is paged after five more minutes of slow retries.
 */
type Done =
  | string
  | Record<string, never>
  | { target: string; actions: 'wantDelivery' | 'syncDone' | 'markSynchronized' | ('wantDelivery' | 'rotationDone')[] };

/** An observation the step's own handling gives way to (a failover that cannot wait for the step). */
type Interrupt = { guard: 'freshPrimaryLost'; target: string; actions: 'see' };

/**
 * The primary is lost while a synchronous standby is up: fail over. Lost is a crash (its
 * process is gone: seen at the first failed probe), or a server its machine gave up
 * waiting for (a hang: a run of failed probes), or one that restarts do not bring back.
 */
function primaryLost(event: ResourceEvent): boolean {
  if (event.type !== 'observed' || event.obs.standby.state !== 'available') return false;
  const { state, alive } = event.obs.primary;
  return state === 'restarting' || state === 'failed' || (state === 'unreachable' && alive === false);
}

function step(task: ResourceTask, done: Record<string, Done>, interrupt: Interrupt[] = []) {
  const retry = [
    { guard: 'retriesLeft' as const, target: 'trying', reenter: true, actions: ['countFailure' as const, 'recordError' as const] },
    { target: 'failed', reenter: true, actions: ['countFailure' as const, 'recordError' as const] },
  ];
  const awaiting = [...interrupt, { guard: 'fresh' as const, actions: ['see' as const, { type: 'stepJob' as const, params: { task } }] }];
  return {
    initial: 'trying' as const,
    entry: 'resetFailures' as const,
    on: done,
    states: {
      trying: { entry: { type: 'stepJob' as const, params: { task } }, on: { 'step.failed': retry, observed: awaiting } },
      failed: {
        tags: ['unhealthy'],
        meta: { pageAfter: 300, trouble: '{step} failing' } satisfies StateMeta,
        entry: { type: 'stepJob' as const, params: { task } },
        on: { 'step.failed': retry.slice(1), observed: awaiting },
      },
    },
  };
}

/**
 * Wait until a server of the resource (its primary, standby, or the target of a move)
 * reaches a state, as the resource's observations show; the server's own machine gets it
 * there, and its changes of state have the resource observed at once.
 */
function until(role: ServerRole, state: string, target: string) {
  return {
    entry: job('observe'),
    on: {
      observed: [
        { guard: and(['fresh', { type: 'serverIs' as const, params: { role, state } }]), target, actions: 'see' as const },
        { guard: 'fresh' as const, actions: 'see' as const },
      ],
    },
  };
}

/**
 * A synchronous standby for the primary: built from the primary's backup on a server of its
 * own, caught up, then named in the primary's `synchronous_standby_names`, after which a
 * commit is acknowledged only once the standby has it. Then on to `done`.
 */
function standbySteps(done: string) {
  return {
    standby: step('place_standby', { placed: 'syncing' }),
    syncing: until('standby', 'available', 'synchronous'),
    synchronous: step('synchronize', { synchronized: { target: done, actions: 'markSynchronized' } }),
  };
}

/** What the database does for the platform whatever its standby is up to. */
const DELIVERY = {
  deferred: { actions: ['wantDelivery' as const, job('deliver')] },
  delivered: { actions: 'deliveryDone' as const },
  'delivery.failed': { actions: ['countDeliveryFailure' as const, 'recordError' as const, 'retryDelivery' as const] },
};

export const resourceMachine = setup({
  types: {
    context: {} as ResourceContext,
    events: {} as ResourceEvent,
    emitted: {} as JobEmitted<ResourceTask>,
  },
  actions: {
    job: emit((_, params: JobParams<ResourceTask>) => jobEmitted(params)),
    /** The step's job, delayed by the backoff its failures so far have earned. */
    stepJob: emit(({ context }, params: { task: ResourceTask }) =>
      jobEmitted({ task: params.task, delaySeconds: stepBackoffSeconds(context.failures) }),
    ),
    see: assign({ seenAt: ({ event }) => ('at' in event ? event.at : '') }),
    resetFailures: assign({ failures: 0, lastError: undefined }),
    countFailure: assign({ failures: ({ context }) => context.failures + 1 }),
    recordError: assign({ lastError: ({ event }) => ('error' in event ? event.error.slice(0, ERROR_LIMIT) : undefined) }),
    wantDelivery: assign({ deliver: true, deliveryFailures: 0 }),
    deliveryDone: assign({ deliver: false, deliveryFailures: 0, lastError: undefined }),
    countDeliveryFailure: assign({ deliveryFailures: ({ context }) => context.deliveryFailures + 1 }),
    /**
     * On reaching `available`: hand the platform its config if it is still waiting for it;
     * not while a rotation is unfinished, which goes on at once and hands over the new one.
     */
    deliverIfWanted: enqueueActions(({ context, enqueue }) => {
      if (context.deliver && !context.rotating) enqueue.emit({ type: 'job', task: 'deliver' });
    }),
    rotationStarted: assign({ rotating: true }),
    rotationDone: assign({ rotating: false }),
    syncStarted: assign({ syncing: true }),
    /** Kept from the first time: a step that interrupted running without a synchronous copy does not end it. */
    markUnsynchronized: assign({
      unsynchronizedSince: ({ context, event }) => context.unsynchronizedSince ?? ('at' in event ? event.at : undefined),
    }),
    markSynchronized: assign({ unsynchronizedSince: undefined }),
    syncDone: assign({ syncing: false }),
    retryDelivery: emit(({ context }) => ({
      type: 'job' as const,
      task: 'deliver' as const,
      delaySeconds: backoff(DELIVERY_RETRY_SECONDS, context.deliveryFailures - 1),
    })),
  },
  guards: {
    fresh: ({ context, event }) => event.type === 'observed' && event.at > context.seenAt,
    retriesLeft: ({ context }) => context.failures + 1 < MAX_STEP_RETRIES,
    /** A server of the resource, in the role given, is in the state given. */
    serverIs: ({ event }, params: { role: ServerRole; state: string }) =>
      event.type === 'observed' && event.obs[params.role].state === params.state,
    wantsStandby: ({ event }) => event.type === 'tenant.created' && event.standby === true,
    /** Not while the standby may lack acknowledged commits: its primary is restarted instead. */
    primaryLost: ({ context, event }) => context.unsynchronizedSince === undefined && primaryLost(event),
    freshPrimaryLost: ({ context, event }) =>
      context.unsynchronizedSince === undefined && event.type === 'observed' && event.at > context.seenAt && primaryLost(event),
    /** The standby failed for good (restarts did not bring it back): build another. */
    standbyLost: ({ event }) => event.type === 'observed' && event.obs.standby.state === 'failed',
    move: ({ event }) => event.type === 'change_plan' && event.move,
    addStandby: ({ event }) => event.type === 'change_plan' && event.standby === 'add',
    dropStandby: ({ event }) => event.type === 'change_plan' && event.standby === 'drop',
    rotationUnfinished: ({ context }) => context.rotating === true,
    /** The primary may acknowledge commits the standby lacks: promoting it could lose them. */
    unsynchronized: ({ context }) => context.unsynchronizedSince !== undefined,
    syncStalled: ({ event }) => event.type === 'observed' && syncStalled(event.obs),
    /** The plan keeps commits waiting for a stalled standby rather than acknowledge them on one server. */
    strict: ({ event }) => event.type === 'observed' && event.obs.sync.mode === 'strict',
    caughtUp: ({ event }) => event.type === 'observed' && caughtUp(event.obs),
    syncFlowing: ({ event }) => event.type === 'observed' && syncFlowing(event.obs),
    forced: ({ event }) => event.type === 'switchover' && event.force === true,
    syncUnfinished: ({ context }) => context.syncing === true,
  },
}).createMachine({
  id: 'resource',
  initial: 'creating',
  context: { seenAt: '', failures: 0, lastError: undefined, deliver: false, deliveryFailures: 0 },
  on: {
    deprovision: { target: '.deprovisioning' },
    deferred: { actions: 'wantDelivery' },
  },
  states: {
    creating: {
      initial: 'placing',
      states: {
        /** Choose a shared server with room, or create a dedicated one. */
        placing: step('place', { placed: 'waiting' }),
        waiting: until('primary', 'available', 'tenant'),
        tenant: {
          ...step('create_tenant', {}),
          on: { 'tenant.created': [{ guard: 'wantsStandby', target: 'standby' }, { target: '#resource.available' }] },
        },
        ...standbySteps('#resource.available'),
      },
    },
    available: {
      tags: ['healthy'],
      entry: 'deliverIfWanted',
      // A failover interrupted a credential step: the new primary has its change or not; finish it.
      always: [
        { guard: 'rotationUnfinished', target: 'rotating' },
        { guard: 'syncUnfinished', target: 'syncing' },
        // Back from a step that interrupted it: the standby is still not synchronous.
        { guard: 'unsynchronized', target: 'unsynchronized' },
      ],
      on: {
        ...DELIVERY,
        rotate: 'rotating',
        credentials: 'syncing',
        change_plan: [
          { guard: 'move', target: 'changing' },
          { guard: 'addStandby', target: 'adding' },
          { guard: 'dropStandby', target: 'dropping' },
          { target: 'resizing' },
        ],
        // The caller checked that a standby is available to take over.
        switchover: 'failover',
        observed: [
          { guard: and(['fresh', 'primaryLost']), target: 'failover', actions: 'see' },
          { guard: and(['fresh', 'standbyLost']), target: 'replacing', actions: 'see' },
          { guard: and(['fresh', 'syncStalled', 'strict']), target: 'stalled', actions: 'see' },
          { guard: and(['fresh', 'syncStalled']), target: 'unsynchronized', actions: 'see' },
          { guard: 'fresh', actions: 'see' },
        ],
      },
    },
    /**
     * The standby stalled, and the plan puts availability first: the primary stops waiting
     * for it, so its commits go through, acknowledged by the primary alone; the standby
     * streams on as it can and, once caught up, is made synchronous again. Meanwhile the
     * standby may lack acknowledged commits, so it is never promoted: a lost primary is
     * left to its own machine's restarts, which keep every commit. A human is paged if this
     * lasts PGFLEET_SYNC_PAGE_AFTER: the window in which a lost primary loses commits.
     */
    unsynchronized: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 'syncPageAfter', trouble: 'running without a synchronous copy' } satisfies StateMeta,
      initial: 'desynchronizing',
      entry: 'markUnsynchronized',
      on: {
        ...DELIVERY,
        rotate: 'rotating',
        credentials: 'syncing',
        // Only an operator who accepts losing the commits the standby may lack.
        switchover: { guard: 'forced', target: 'failover' },
      },
      states: {
        desynchronizing: step('desynchronize', { desynchronized: 'waiting' }),
        waiting: {
          entry: job('observe'),
          on: {
            observed: [
              { guard: and(['fresh', 'standbyLost']), target: '#resource.replacing', actions: 'see' },
              { guard: and(['fresh', 'caughtUp']), target: 'resynchronizing', actions: 'see' },
              { guard: 'fresh', actions: 'see' },
            ],
          },
        },
        /**
         * Not retried where it is: a standby that does not confirm in time (it stalled again)
         * must not hold commits up while the step retries. The primary stops waiting for it
         * again, and it is tried again once it has caught up again.
         */
        resynchronizing: {
          entry: job('synchronize'),
          on: {
            synchronized: { target: '#resource.available', actions: 'markSynchronized' },
            'step.failed': { target: 'desynchronizing', actions: 'recordError' },
            observed: { guard: 'fresh', actions: ['see', job('synchronize')] },
          },
        },
      },
    },
    /**
     * The standby stalled, and the plan is strict: commits keep waiting for it, which stops
     * the database's writes, and only the standby can end it: a human is paged after ten
     * seconds. It ends when the standby answers again, or is replaced; a lost primary still
     * fails over, to a standby that has every acknowledged commit. A rotation asked for
     * meanwhile would wait like any commit: it starts once writes flow again.
     */
    stalled: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 10, trouble: 'synchronous standby stalled: commits wait' } satisfies StateMeta,
      on: {
        ...DELIVERY,
        rotate: { actions: 'rotationStarted' },
        credentials: { actions: 'syncStarted' },
        observed: [
          { guard: and(['fresh', 'primaryLost']), target: 'failover', actions: 'see' },
          { guard: and(['fresh', 'standbyLost']), target: 'replacing', actions: 'see' },
          { guard: and(['fresh', 'syncFlowing']), target: 'available', actions: 'see' },
          { guard: 'fresh', actions: 'see' },
        ],
      },
    },
    /**
     * The standby is lost: the primary stops waiting for it (its commits would hang for
     * good), the dead server goes, and a new standby is built and made synchronous.
     */
    replacing: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 600, trouble: 'standby lost: replacing it' } satisfies StateMeta,
      initial: 'releasing',
      on: { change_plan: {} },
      states: {
        releasing: step('drop_standby', { 'standby.dropped': 'standby' }),
        ...standbySteps('#resource.available'),
      },
    },
    /**
     * The primary is lost and a synchronous standby has every acknowledged commit: fence
     * the old primary first (so there are never two), then promote the standby, which
     * becomes the primary; the platform is handed the new URL.
     */
    failover: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 60, trouble: 'primary lost: failing over to the standby' } satisfies StateMeta,
      initial: 'fencing',
      on: { change_plan: {} },
      states: {
        fencing: step('fence_primary', { fencing: 'waiting' }),
        waiting: until('primary', 'fenced', 'promoting'),
        promoting: step('promote', { promoted: { target: '#resource.rejoining', actions: 'wantDelivery' } }),
      },
    },
    /**
     * The database is up on its new primary, without a standby to fail over to: the old
     * primary comes back as one (or a new server, when it is gone), and becomes synchronous.
     */
    rejoining: {
      tags: ['unhealthy', 'urgent'],
      meta: { pageAfter: 600, trouble: 'restoring the standby after a failover' } satisfies StateMeta,
      initial: 'placing',
      on: { change_plan: {} },
      states: {
        placing: step('restore_standby', { placed: 'syncing' }),
        syncing: until('standby', 'available', 'synchronous'),
        synchronous: step('synchronize', { synchronized: { target: '#resource.available', actions: 'markSynchronized' } }),
      },
    },
    /**
     * Onto a plan with a standby: it is built and made synchronous while the database serves
     * as before, then the new limits; the platform gets the new URL (the router's).
     */
    adding: {
      initial: 'standby',
      entry: 'wantDelivery',
      on: { change_plan: {} },
      states: standbySteps('#resource.resizing'),
    },
    /** Off a plan with a standby: the primary stops waiting for it, then it goes; then the new limits. */
    dropping: step('drop_standby', { 'standby.dropped': { target: '#resource.resizing', actions: 'markSynchronized' }, change_plan: {} }),
    /**
     * A new password for the owner: the pending one set on the primary (sessions logged in
     * keep running), made current with its followers', then handed to the platform. A lost
     * primary is failed over at once; the rotation finishes on the new one.
     */
    rotating: {
      ...step(
        'rotate_password',
        { rotated: { target: '#resource.available', actions: ['rotationDone', 'wantDelivery'] }, change_plan: {} },
        [{ guard: 'freshPrimaryLost', target: '#resource.failover', actions: 'see' }],
      ),
      entry: ['rotationStarted', 'resetFailures'],
    },
    /** Named credentials made, rotated or destroyed on the primary as the control database asks; a failover first, as above. */
    syncing: {
      ...step('sync_credentials', { 'credentials.synced': { target: '#resource.available', actions: 'syncDone' }, change_plan: {} }, [
        { guard: 'freshPrimaryLost', target: '#resource.failover', actions: 'see' },
      ]),
      entry: ['syncStarted', 'resetFailures'],
    },
    /** A plan of the same kind: new limits for the tenant's role, nothing moves. */
    resizing: step('apply_plan', { applied: '#resource.available' }),
    /** A plan of another kind: the database moves to a server of that kind. */
    changing: {
      initial: 'placing',
      on: { change_plan: {} },
      states: {
        placing: step('place', { placed: 'waiting' }),
        waiting: until('target', 'available', 'copying'),
        /** Writes stop on the old server, and every committed row is copied to the new one. */
        copying: step('move', { moved: 'activating' }),
        /** The tenant logs in on the new server. */
        activating: step('activate', { activated: 'cleaning' }),
        /** The old server forgets the tenant (a dedicated one is deleted). */
        cleaning: step('cleanup', { cleaned: '#resource.available' }),
      },
    },
    /** The tenant is dropped from every server it was on; dedicated servers are deleted. */
    deprovisioning: { ...step('drop_tenant', { dropped: 'deleted', deprovision: {}, deferred: {} }), tags: ['gone'] },
    deleted: { type: 'final', tags: ['gone'] },
  },
});
