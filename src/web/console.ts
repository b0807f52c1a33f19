import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AnyStateMachine } from 'xstate';
import { configVarPrefix } from '../config.ts';
import { resolveIncident } from '../incidents/rows.ts';
import { getIncident, listIncidents, listIncidentsOf, type IncidentView, type TimelineEntry } from '../incidents/views.ts';
import { jobCounts, listDeadJobs, retryDeadJob } from '../queue/status.ts';
import { getResource, listResources } from '../resources/views.ts';
import { MACHINES, type MachineName } from '../runner/machines.ts';
import { getServer, listServers } from '../servers/rows.ts';
import { listTransitions, type TransitionView } from '../runner/store.ts';
import { escapeHtml as h, page } from './html.ts';
import { sameSecret } from './auth.ts';
import { errorHandler, HttpError, INTERNAL_ERROR } from './errors.ts';
import { LIVE_SCRIPT } from './liveRefresh.ts';
import type { WebOptions } from './options.ts';
import { checkCsrf, csrfField, Sessions, type Session } from './sessions.ts';
import { idParams, jobParams, type IdParams } from './validation.ts';

const CONSOLE_STYLE = `
  header { background: #1d2330; color: #fff; }
  header nav { max-width: 1100px; margin: 0 auto; padding: .7rem 1rem; display: flex; gap: 1.25rem; align-items: center; }
  header a { color: #d5dbea; } header a.brand { color: #fff; font-weight: 700; margin-right: .5rem; }
  header .right { margin-left: auto; font-size: .85rem; }
  .tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: .75rem; margin: 1rem 0; }
  .tile { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1rem; }
  .tile b { display: block; font-size: 1.5rem; } .tile span { color: var(--muted); font-size: .85rem; }
  .machine { display: flex; flex-wrap: wrap; gap: .6rem; }
  .node { border: 1px solid var(--line); border-radius: 8px; padding: .45rem .7rem; min-width: 8.5rem; background: #fafbfc;
    font-size: .85rem; }
  .node.current { border: 2px solid var(--accent); background: #eef2ff; }
  .node .name { font-weight: 600; } .node .sub { color: var(--muted); } .node .sub b { color: var(--accent); }
  .node .to { color: var(--muted); font-size: .78rem; margin-top: .2rem; }
  .timeline td:first-child { white-space: nowrap; }
  .kind { font-size: .75rem; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
  .login { max-width: 360px; margin: 5rem auto; }
  .login input { width: 100%; padding: .5rem; margin: .5rem 0 1rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
  .live { font-size: .8rem; color: var(--muted); }
  form.inline { display: inline; } button.link { border: 0; background: none; padding: 0; color: #d5dbea; font-size: inherit; }
`;

/** Healthy, on the way, or in trouble, at a glance. */
function stateBadge(state: string): string {
  const top = state.split('.')[0]!;
  const cls = ['available', 'resolved', 'deleted'].includes(top)
    ? ' ok'
    : ['failed', 'unreachable', 'escalated', 'unsynchronized', 'stalled'].includes(top) || state.endsWith('.failed')
      ? ' bad'
      : '';
  return `<span class="state${cls}">${h(state)}</span>`;
}

const ago = (d: Date | string | null) => {
  if (!d) return 'never';
  const s = Math.max(0, Math.round((Date.now() - new Date(d).getTime()) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};
const time = (d: Date | string) => `${new Date(d).toISOString().replace('T', ' ').slice(0, 19)}`;
const table = (head: string[], rows: string[][], empty: string) =>
  rows.length === 0
    ? `<p class="muted">${h(empty)}</p>`
    : `<table><thead><tr>${head.map((c) => `<th>${h(c)}</th>`).join('')}</tr></thead>` +
      `<tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('')}</tbody></table>`;

/**
 * A picture of a machine: each top-level state with its substates and where it can go,
 * drawn from the machine's own definition, with the entity's current state highlighted.
 */
export function machinePicture(logic: AnyStateMachine, current: string): string {
  const [top, ...rest] = current.split('.');
  type Node = (typeof logic.root.states)[string];
  const targetsOf = (node: Node, name: string, out: Set<string>): Set<string> => {
    for (const defs of node.transitions.values())
      for (const d of defs) for (const t of d.target ?? []) if (t.path[0] && t.path[0] !== name) out.add(t.path[0]);
    for (const child of Object.values(node.states)) targetsOf(child, name, out);
    return out;
  };
  const global = [...logic.root.transitions.entries()].flatMap(([event, defs]) =>
    defs.flatMap((d) => (d.target ?? []).map((t) => `${t.path[0]} on ${event}`)),
  );
  const nodes = Object.entries(logic.root.states).map(([name, node]) => {
    const subs = Object.keys(node.states).map((s) => (name === top && s === rest[0] ? `<b>${h(s)}</b>` : h(s)));
    const to = [...targetsOf(node, name, new Set())];
    return (
      `<div class="node${name === top ? ' current' : ''}" data-state="${h(name)}"><div class="name">${h(name)}</div>` +
      `${subs.length ? `<div class="sub">${subs.join(' · ')}</div>` : ''}` +
      `${to.length ? `<div class="to">→ ${to.map(h).join(', ')}</div>` : ''}</div>`
    );
  });
  return (
    `<div class="machine">${nodes.join('')}</div>` +
    `${global.length ? `<p class="muted">From any state: ${global.map(h).join(', ')}.</p>` : ''}`
  );
}

function transitionsTable(transitions: TransitionView[]): string {
  return table(
    ['at (UTC)', 'from', 'to', 'event'],
    transitions.map((t) => [time(t.at), h(t.from ?? '∅'), stateBadge(t.to), h(t.event)]),
    'No transitions yet.',
  );
}

function incidentsTable(incidents: IncidentView[]): string {
  return table(
    ['incident', 'entity', 'state', 'reason', 'escalations', 'opened'],
    incidents.map((i) => [
      `<a href="/console/incidents/${h(i.id)}">${h(i.id.slice(0, 8))}</a> <span class="muted">${h(i.kind)}</span>`,
      `<a href="/console/${i.entity.kind === 'resource' ? 'resources' : 'servers'}/${h(i.entity.id)}">` +
        `${h(i.entity.kind)} ${h(i.entity.id.slice(0, 8))}</a>`,
      stateBadge(i.state),
      h(i.reason),
      h([...new Set(i.escalations.map((e) => e.reason))].join(', ') || '—'),
      h(ago(i.openedAt)),
    ]),
    'No incidents.',
  );
}

function timelineTable(entries: TimelineEntry[]): string {
  return `<table class="timeline"><thead><tr><th>at (UTC)</th><th>what</th><th>from</th><th></th></tr></thead><tbody>${entries
    .map(
      (e) =>
        `<tr data-kind="${h(e.kind)}"><td class="mono">${h(e.at.replace('T', ' ').slice(0, 23))}</td>` +
        `<td class="kind">${h(e.kind)}</td><td>${h(e.source)}</td><td>${h(e.summary)}</td></tr>`,
    )
    .join('')}</tbody></table>`;
}

/**
 * Where to go after signing in: a console path and query of plain characters, nothing
 * that could end a header line or lead off this site.
 */
const NEXT = /^\/console(?:\/[A-Za-z0-9._~/-]*)?(?:\?[A-Za-z0-9._~=&%-]*)?$/;
function nextPage(raw: unknown): string {
  return typeof raw === 'string' && NEXT.test(raw) && !raw.startsWith('/console/login') && !raw.startsWith('/console/logout')
    ? raw
    : '/console';
}

export function consoleUi(opts: WebOptions): FastifyPluginAsync {
  const prefix = configVarPrefix(opts.addon.id);

  const sessions = new Sessions(opts.pool, opts.addon.publicUrl);
  const signedIn = new WeakMap<FastifyRequest, Session>();
  const session = (req: FastifyRequest) => signedIn.get(req)!;

  function render(req: FastifyRequest, reply: FastifyReply, title: string, main: string) {
    reply.type('text/html').header('cache-control', 'no-store');
    if (req.headers['x-pgfleet-partial'] === '1') return reply.send(main);
    const signOut =
      `<form class="inline" method="post" action="/console/logout">${csrfField(session(req))}` +
      '<button class="link" type="submit">sign out</button></form>';
    const nav =
      '<header><nav><a class="brand" href="/console">pgfleet</a><a href="/console">Fleet</a>' +
      '<a href="/console/incidents">Incidents</a><a href="/console/jobs">Dead jobs</a>' +
      `<span class="right"><span class="live">live · refreshes every 2 s</span> · ${signOut}</span></nav></header>`;
    return reply.send(page(`${title} · pgfleet`, `${nav}<main>${main}</main>${LIVE_SCRIPT}`, CONSOLE_STYLE));
  }

  const byId = { schema: { params: idParams } };
  type ById = { Params: IdParams };
  const id = (req: { params: IdParams }) => req.params.id.toLowerCase();

  return async (app: FastifyInstance) => {
    await app.register(formbody, { bodyLimit: 4096 });

    app.setErrorHandler(
      errorHandler(INTERNAL_ERROR.operator, (_, reply, status, message) =>
        reply
          .status(status)
          .type('text/html')
          .send(
            page(
              'pgfleet',
              `<main><section><h2>${status}</h2><p>${h(message)}</p><p><a href="/console">Back to the fleet</a></p></section></main>`,
              CONSOLE_STYLE,
            ),
          ),
      ),
    );

    const isLogin = (req: FastifyRequest) => req.routeOptions.url === '/console/login';

    app.addHook('onRequest', async (req, reply) => {
      if (isLogin(req)) return;
      const current = await sessions.find(req, 'console');
      if (!current) {
        if (req.headers['x-pgfleet-partial'] === '1') return reply.status(401).send();
        return reply.redirect(`/console/login?next=${encodeURIComponent(nextPage(req.url))}`, 303);
      }
      signedIn.set(req, current);
    });

    // Every form a signed-in page posts carries the session's CSRF token: checked before anything else
    // of the request is (route schemas run after preValidation), so a forged form learns nothing.
    app.addHook('preValidation', async (req) => {
      if (req.method !== 'GET' && req.method !== 'HEAD' && !isLogin(req)) checkCsrf(session(req), req.body);
    });

    app.get('/console/login', async (req, reply) => {
      const failed = (req.query as { failed?: string }).failed !== undefined;
      const next = nextPage((req.query as { next?: unknown }).next);
      return reply.type('text/html').send(
        page(
          'Sign in · pgfleet',
          `<main><form class="login" method="post" action="/console/login"><section><h1>pgfleet</h1>` +
            `<p class="muted">Sign in with the operator token (<code>OPERATOR_TOKEN</code>, printed by <code>npm start</code>).</p>
           ${failed ? '<p class="state bad">That token is not right.</p>' : ''}
           <label for="token">Operator token</label>` +
            `<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
           <input type="hidden" name="next" value="${h(next)}">` +
            `<button class="primary" type="submit">Sign in</button></section></form></main>`,
          CONSOLE_STYLE,
        ),
      );
    });

    app.post('/console/login', async (req, reply) => {
      const form = (req.body ?? {}) as { token?: unknown; next?: unknown };
      const next = nextPage(form.next);
      if (typeof form.token !== 'string' || !sameSecret(form.token, opts.operatorToken))
        return reply.redirect(`/console/login?failed&next=${encodeURIComponent(next)}`, 303);
      await sessions.start(req, reply, 'console', null);
      return reply.redirect(next, 303);
    });

    app.post('/console/logout', async (req, reply) => {
      await sessions.end(req, reply, 'console');
      return reply.redirect('/console/login', 303);
    });

    app.get('/console', async (req, reply) => {
      const [servers, resources, incidents, q] = await Promise.all([
        listServers(opts.pool),
        listResources(opts.pool, opts.sealer, prefix),
        listIncidents(opts.pool, 20),
        jobCounts(opts.pool),
      ]);
      const open = incidents.filter((i) => i.resolvedAt === null);
      const tiles = [
        [servers.length, 'servers'],
        [resources.length, 'resources'],
        [open.length, 'open incidents'],
        [q.ready, 'jobs due'],
        [q.running, 'jobs running'],
        [q.dead, 'dead jobs'],
      ];
      return render(
        req,
        reply,
        'Fleet',
        `<h1>Fleet</h1><div class="tiles">${tiles
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
         )}</section>`,
      );
    });

    app.get<ById>('/console/servers/:id', byId, async (req, reply) => {
      const serverId = id(req);
      const server = await getServer(opts.pool, serverId);
      if (!server) throw new HttpError(404, `no server ${serverId}`);
      const [transitions, incidents] = await Promise.all([listTransitions(opts.pool, serverId, 50), listIncidentsOf(opts.pool, serverId)]);
      const path = transitions[0]?.to ?? server.state;
      const obs = Object.entries(server.observation).sort(([a], [b]) => a.localeCompare(b));
      return render(
        req,
        reply,
        `Server ${serverId.slice(0, 8)}`,
        `<h1>Server <span class="mono">${h(serverId)}</span></h1><p>${stateBadge(path)} ` +
          `<span class="muted">${h(server.provider)} · ${h(`${server.host ?? '-'}:${server.port ?? '-'}`)} · ` +
          `observed ${h(ago(server.observedAt))}</span></p>
         <section><h2>Machine</h2>${machinePicture(MACHINES.server.logic, path)}</section>
         <section><h2>Incidents</h2>${incidentsTable(incidents)}</section>
         <section><h2>Latest observation</h2>${
           obs.length
             ? `<dl>${obs.map(([k, v]) => `<dt>${h(k)}</dt><dd>${h(v)}</dd>`).join('')}</dl>`
             : '<p class="muted">Not observed yet.</p>'
         }</section>
         <section><h2>Transitions</h2>${transitionsTable(transitions)}</section>`,
      );
    });

    app.get<ById>('/console/resources/:id', byId, async (req, reply) => {
      const resourceId = id(req);
      const resource = await getResource(opts.pool, opts.sealer, prefix, resourceId);
      if (!resource) throw new HttpError(404, `no resource ${resourceId}`);
      const path = resource.transitions[0]?.to ?? resource.state;
      return render(
        req,
        reply,
        `Resource ${resourceId.slice(0, 8)}`,
        `<h1>Resource <span class="mono">${h(resourceId)}</span></h1><p>${stateBadge(path)} ` +
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
         <section><h2>Incidents</h2>${incidentsTable(await listIncidentsOf(opts.pool, resourceId))}</section>
         <section><h2>Transitions</h2>${transitionsTable(resource.transitions)}</section>`,
      );
    });

    app.get('/console/incidents', async (req, reply) =>
      render(req, reply, 'Incidents', `<h1>Incidents</h1><section>${incidentsTable(await listIncidents(opts.pool, 200))}</section>`),
    );

    app.get<ById>('/console/incidents/:id', byId, async (req, reply) => {
      const incidentId = id(req);
      const incident = await getIncident(opts.pool, incidentId);
      if (!incident) throw new HttpError(404, `no incident ${incidentId}`);
      const entityPath = incident.entity.kind === 'resource' ? 'resources' : 'servers';
      const entityMachine = (incident.entity.kind ?? 'server') as MachineName;
      return render(
        req,
        reply,
        `Incident ${incidentId.slice(0, 8)}`,
        `<h1>${h(incident.reason)}</h1>${
          incident.resolvedAt === null
            ? `<form method="post" action="/console/incidents/${h(incident.id)}/resolve" style="float:right">` +
              `${csrfField(session(req))}<button type="submit">Resolve</button></form>`
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
         <section id="timeline"><h2>Timeline</h2>${timelineTable(incident.timeline)}</section>`,
      );
    });

    /** An operator closes an incident: the exception was dealt with, or the condition accepted. */
    app.post<ById>('/console/incidents/:id/resolve', byId, async (req, reply) => {
      const incidentId = id(req);
      if (!(await resolveIncident(opts.pool, incidentId))) throw new HttpError(404, `no open incident ${incidentId}`);
      return reply.redirect(`/console/incidents/${incidentId}`, 303);
    });

    app.get('/console/jobs', async (req, reply) => {
      const jobs = await listDeadJobs(opts.pool);
      return render(
        req,
        reply,
        'Dead jobs',
        `<h1>Dead jobs</h1><p class="muted">Jobs whose attempts are spent: what automation could not do.</p><section>${table(
          ['job', 'task', 'entity', 'attempts', 'dead since', 'last error', ''],
          jobs.map((j) => [
            h(j.id),
            h(j.task),
            j.entityId ? `<span class="mono">${h(j.entityId.slice(0, 8))}</span>` : '—',
            h(j.attempts),
            h(ago(j.deadAt)),
            `<span class="mono">${h((j.lastError ?? '').split('\n')[0])}</span>`,
            `<form method="post" action="/console/jobs/${h(j.id)}/retry">${csrfField(session(req))}` +
              '<button type="submit">Retry</button></form>',
          ]),
          'No dead jobs.',
        )}</section>`,
      );
    });

    app.post<{ Params: { id: string } }>('/console/jobs/:id/retry', { schema: { params: jobParams } }, async (req, reply) => {
      const jobId = req.params.id;
      if (!(await retryDeadJob(opts.pool, jobId))) throw new HttpError(404, `no dead job ${jobId}`);
      return reply.redirect('/console/jobs', 303);
    });
  };
}
