import type { Queryable } from '../db.ts';
import { sendEvent, type StepSubscriber, type StepTaken } from '../runner/runner.ts';
import { standbyTakesOver } from '../servers/rows.ts';
import { checkConditions } from './escalation.ts';
import { checkProviderNotices } from './notices.ts';
import { healthOf, incidentSettings, stuckAfter, troubleReason } from './policy.ts';
import { following, openIncident } from './rows.ts';

/**
 * After every change of an entity's state, in the transaction that stores it: trouble opens
 * an incident or joins the one open; every change is shown to the incidents that follow the
 * entity; an incident that ends is marked resolved.
 */
async function afterStep(db: Queryable, step: StepTaken): Promise<void> {
  const { machine, entityId, at } = step;
  if (machine === 'incident') {
    // now(), like every transition row's time: the timeline's window closes on the last of them.
    if (step.to === 'resolved') await db.query('update incidents set resolved_at = now() where id = $1', [entityId]);
    return;
  }
  const health = healthOf(machine, step.to);
  const limit = stuckAfter(machine, step.to, incidentSettings().stuckAfter);
  const open = await following(db, entityId);
  for (const id of open) {
    await sendEvent<'incident'>(db, id, {
      type: 'entity.changed',
      at,
      state: step.to,
      healthy: health === 'healthy' || health === 'gone',
      stuckAfter: limit,
    });
  }
  // A primary whose standby takes over is the resource's trouble, told as its failover.
  if (open.length === 0 && health === 'unhealthy' && !(machine === 'server' && (await standbyTakesOver(db, entityId)))) {
    await openIncident(db, entityId, 'trouble', troubleReason(machine, step.to), { entityState: step.to, since: at, stuckAfter: limit });
  }
}

/**
 * Incidents hear every step and every observation the runner publishes, in its transaction
 * (wired in src/processes/subscribers.ts): a change of state may open, join or end an incident; an
 * observation may page a condition or schedule a provider's retirement of a host.
 */
export const incidentSubscriber: StepSubscriber = {
  changed: afterStep,
  async observed(db, { machine, entityId, obs }) {
    await checkConditions(db, machine, entityId, obs);
    await checkProviderNotices(db, machine, entityId, obs);
  },
};
