import { configureIncidents, type IncidentSettings } from '../incidents/policy.ts';
import { incidentSubscriber } from '../incidents/subscriber.ts';
import { publishTo } from '../runner/runner.ts';

/**
 * Who hears what the runner does, in every process that sends events (web, worker and clock;
 * `pgfleet start` runs them all): incidents, paged as the configuration says. One function
 * that runProcesses calls for every process, so a new process cannot send events without
 * incidents by forgetting a line, and a new subscriber (notifications, metrics) is one line here.
 */
export function wireSubscribers(paging: IncidentSettings): void {
  configureIncidents(paging);
  publishTo([incidentSubscriber]);
}
