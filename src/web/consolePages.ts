/**
 * The console's pages as HTML, each drawn from what its route loaded: the sign-in and error
 * pages whole, the signed-in pages as the `<main>` that `consoleFrame` wraps (or that a live
 * refresh takes alone).
 */
import type { IncidentView, TimelineEntry } from '../incidents/views.ts';
import type { DeadJob } from '../queue/status.ts';
import type { ResourceView } from '../resources/views.ts';
import { MACHINES, type MachineName } from '../runner/machines.ts';
import type { TransitionView } from '../runner/store.ts';
import type { ServerView } from '../servers/rows.ts';
import {
  ago,
  CONSOLE_STYLE,
  incidentsTable,
  machinePicture,
  stateBadge,
  table,
  time,
  timelineTable,
  transitionsTable,
} from './consoleHtml.ts';
import { escapeHtml as h, page } from './html.ts';
import { LIVE_SCRIPT } from './liveRefresh.ts';

/** A signed-in page: the navigation, with a sign-out form carrying the session's CSRF field, around `main`. */
export function consoleFrame(title: string, main: string, csrf: string): string {
  const signOut =
    `<form class="inline" method="post" action="/console/logout">${csrf}` + '<button class="link" type="submit">sign out</button></form>';
  const nav =
    '<header><nav><a class="brand" href="/console">pgfleet</a><a href="/console">Fleet</a>' +
    '<a href="/console/incidents">Incidents</a><a href="/console/jobs">Dead jobs</a>' +
    `<span class="right"><span class="live">live · refreshes every 2 s</span> · ${signOut}</span></nav></header>`;
  return page(`${title} · pgfleet`, `${nav}<main>${main}</main>${LIVE_SCRIPT}`, CONSOLE_STYLE);
}

export function errorPage(status: number, message: string): string {
  return page(
    'pgfleet',
    `<main><section><h2>${status}</h2><p>${h(message)}</p><p><a href="/console">Back to the fleet</a></p></section></main>`,
    CONSOLE_STYLE,
  );
}

export function loginPage(failed: boolean, next: string): string {
  return page(
    'Sign in · pgfleet',
    `<main><form class="login" method="post" action="/console/login"><section><h1>pgfleet</h1>` +
      `<p class="muted">Sign in with the operator token (<code>OPERATOR_TOKEN</code>, printed by <code>npm start</code>).</p>
           ${failed ? '<p class="state bad">That token is not right.</p>' : ''}
           <label for="token">Operator token</label>` +
      `<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
           <input type="hidden" name="next" value="${h(next)}">` +
      `<button class="primary" type="submit">Sign in</button></section></form></main>`,
    CONSOLE_STYLE,
  );
}

export function fleetPage(
  servers: ServerView[],
  resources: ResourceView[],
  incidents: IncidentView[],
  q: { ready: number; running: number; dead: number },
): string {
  const open = incidents.filter((i) => i.resolvedAt === null);
  const tiles = [
    [servers.length, 'servers'],
    [resources.length, 'resources'],
    [open.length, 'open incidents'],
    [q.ready, 'jobs due'],
    [q.running, 'jobs running'],
    [q.dead, 'dead jobs'],
  ];
  return `<h1>Fleet</h1><div class="tiles">${tiles
    .map(([n, label]) => `<div class="tile" data-tile="${h(label)}"><b>${h(n)}</b><span>${h(label)}</span></div>`)
    .join('')}</div>
         <section><h2>Open and recent incidents</h2>${incidentsTable(incidents)}</section>
         <section><h2>Servers</h2>${table(
           ['server', 'state', 'address', 'last observation'],
           servers.map((s) => [
             `<a href="/console/servers/${h(s.id)}" class="mono">${h(s.id)}</a>`,
             stateBadge(s.state),
             `<span class="mono">${h(`${s.host ?? '-'}:${s.port ?? '-'}`)}</span>`,
             h(ago(s.observedAt)),
           ]),
           'No servers yet.',
         )}</section>
         <section><h2>Resources</h2>${table(
           ['resource', 'plan', 'state', 'servers', 'last observation'],
           resources.map((r) => [
             `<a href="/console/resources/${h(r.id)}" class="mono">${h(r.id)}</a> ` +
               `${r.name ? `<span class="muted">${h(r.name)}</span>` : ''}`,
             h(r.plan),
             stateBadge(r.state),
             h(r.servers.map((s) => `${s.role} ${s.id.slice(0, 8)}`).join(', ')),
             h(ago(r.observedAt)),
           ]),
           'No resources yet.',
         )}</section>`;
}

export function serverPage(server: ServerView, transitions: TransitionView[], incidents: IncidentView[]): string {
  const path = transitions[0]?.to ?? server.state;
  const obs = Object.entries(server.observation).sort(([a], [b]) => a.localeCompare(b));
  return (
    `<h1>Server <span class="mono">${h(server.id)}</span></h1><p>${stateBadge(path)} ` +
    `<span class="muted">${h(server.provider)} · ${h(`${server.host ?? '-'}:${server.port ?? '-'}`)} · ` +
    `observed ${h(ago(server.observedAt))}</span></p>
         <section><h2>Machine</h2>${machinePicture(MACHINES.server.logic, path)}</section>
         <section><h2>Incidents</h2>${incidentsTable(incidents)}</section>
         <section><h2>Latest observation</h2>${
           obs.length
             ? `<dl>${obs.map(([k, v]) => `<dt>${h(k)}</dt><dd>${h(v)}</dd>`).join('')}</dl>`
             : '<p class="muted">Not observed yet.</p>'
         }</section>
         <section><h2>Transitions</h2>${transitionsTable(transitions)}</section>`
  );
}

export function resourcePage(resource: ResourceView & { transitions: TransitionView[] }, incidents: IncidentView[]): string {
  const path = resource.transitions[0]?.to ?? resource.state;
  return (
    `<h1>Resource <span class="mono">${h(resource.id)}</span></h1><p>${stateBadge(path)} ` +
    `<span class="muted">${h(resource.plan)} · ${h(resource.region)}${resource.name ? ` · ${h(resource.name)}` : ''}</span></p>
         ${resource.lastError ? `<p class="state bad">last error: ${h(resource.lastError)}</p>` : ''}
         <section><h2>Machine</h2>${machinePicture(MACHINES.resource.logic, path)}</section>
         <section><h2>Servers</h2>${table(
           ['server', 'role', 'state', 'address'],
           resource.servers.map((s) => [
             `<a class="mono" href="/console/servers/${h(s.id)}">${h(s.id)}</a>`,
             h(s.role),
             stateBadge(s.state),
             `<span class="mono">${h(`${s.host ?? '-'}:${s.port ?? '-'}`)}</span>`,
           ]),
           'No servers.',
         )}</section>
         <section><h2>Incidents</h2>${incidentsTable(incidents)}</section>
         <section><h2>Transitions</h2>${transitionsTable(resource.transitions)}</section>`
  );
}

export function incidentsPage(incidents: IncidentView[]): string {
  return `<h1>Incidents</h1><section>${incidentsTable(incidents)}</section>`;
}

/** An incident with its escalations, its machine and its entity's, and its timeline; `csrf` goes in the form that resolves it. */
export function incidentPage(incident: IncidentView & { timeline: TimelineEntry[] }, csrf: string): string {
  const entityPath = incident.entity.kind === 'resource' ? 'resources' : 'servers';
  const entityMachine = (incident.entity.kind ?? 'server') as MachineName;
  return (
    `<h1>${h(incident.reason)}</h1>${
      incident.resolvedAt === null
        ? `<form method="post" action="/console/incidents/${h(incident.id)}/resolve" style="float:right">` +
          `${csrf}<button type="submit">Resolve</button></form>`
        : ''
    }<p>${stateBadge(incident.state)} <span class="muted">${h(incident.kind)} on ` +
    `<a href="/console/${entityPath}/${h(incident.entity.id)}">${h(incident.entity.kind)} ${h(incident.entity.id)}</a>` +
    ` · opened ${h(time(incident.openedAt))} UTC` +
    `${incident.resolvedAt ? ` · resolved ${h(time(incident.resolvedAt))} UTC` : ''}` +
    `${incident.scheduledFor ? ` · scheduled for ${h(time(incident.scheduledFor))} UTC` : ''}</span></p>
         ${
           incident.escalations.length
             ? `<section><h2>Escalations</h2>${table(
                 ['at', 'reason', 'detail'],
                 incident.escalations.map((e) => [time(e.at), h(e.reason), h(e.detail)]),
                 '',
               )}</section>`
             : ''
         }
         <section><h2>The incident</h2>${machinePicture(MACHINES.incident.logic, incident.state)}</section>
         <section><h2>The ${h(incident.entity.kind)} now</h2>${machinePicture(
           MACHINES[entityMachine].logic,
           incident.entity.state ?? '',
         )}</section>
         <section id="timeline"><h2>Timeline</h2>${timelineTable(incident.timeline)}</section>`
  );
}

/** Jobs whose attempts are spent, each with a form (carrying `csrf`) that retries it. */
export function deadJobsPage(jobs: DeadJob[], csrf: string): string {
  return `<h1>Dead jobs</h1><p class="muted">Jobs whose attempts are spent: what automation could not do.</p><section>${table(
    ['job', 'task', 'entity', 'attempts', 'dead since', 'last error', ''],
    jobs.map((j) => [
      h(j.id),
      h(j.task),
      j.entityId ? `<span class="mono">${h(j.entityId.slice(0, 8))}</span>` : '—',
      h(j.attempts),
      h(ago(j.deadAt)),
      `<span class="mono">${h((j.lastError ?? '').split('\n')[0])}</span>`,
      `<form method="post" action="/console/jobs/${h(j.id)}/retry">${csrf}` + '<button type="submit">Retry</button></form>',
    ]),
    'No dead jobs.',
  )}</section>`;
}
