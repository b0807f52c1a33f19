import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { configVarPrefix } from '../config.ts';
import { resolveIncident } from '../incidents/rows.ts';
import { getIncident, listIncidents, listIncidentsOf } from '../incidents/views.ts';
import { jobCounts, listDeadJobs, retryDeadJob } from '../queue/status.ts';
import { getResource, listResources } from '../resources/views.ts';
import { getServer, listServers } from '../servers/rows.ts';
import { listTransitions } from '../runner/store.ts';
import { sameSecret } from './auth.ts';
import {
  consoleFrame,
  deadJobsPage,
  errorPage,
  fleetPage,
  incidentPage,
  incidentsPage,
  loginPage,
  resourcePage,
  serverPage,
} from './consolePages.ts';
import { errorHandler, HttpError, INTERNAL_ERROR } from './errors.ts';
import type { WebOptions } from './options.ts';
import { checkCsrf, csrfField, Sessions, type Session } from './sessions.ts';
import { idParams, jobParams, type IdParams } from './validation.ts';

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

/** The operator console's routes: signing in and out, and each page loaded and drawn (`consolePages.ts`). */
export function consoleUi(opts: WebOptions): FastifyPluginAsync {
  const prefix = configVarPrefix(opts.addon.id);

  const sessions = new Sessions(opts.pool, opts.addon.publicUrl);
  const signedIn = new WeakMap<FastifyRequest, Session>();
  const session = (req: FastifyRequest) => signedIn.get(req)!;

  function render(req: FastifyRequest, reply: FastifyReply, title: string, main: string) {
    reply.type('text/html').header('cache-control', 'no-store');
    if (req.headers['x-pgfleet-partial'] === '1') return reply.send(main);
    return reply.send(consoleFrame(title, main, csrfField(session(req))));
  }

  const byId = { schema: { params: idParams } };
  type ById = { Params: IdParams };
  const id = (req: { params: IdParams }) => req.params.id.toLowerCase();

  return async (app: FastifyInstance) => {
    await app.register(formbody, { bodyLimit: 4096 });

    app.setErrorHandler(
      errorHandler(INTERNAL_ERROR.operator, (_, reply, status, message) =>
        reply.status(status).type('text/html').send(errorPage(status, message)),
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
      return reply.type('text/html').send(loginPage(failed, next));
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
      return render(req, reply, 'Fleet', fleetPage(servers, resources, incidents, q));
    });

    app.get<ById>('/console/servers/:id', byId, async (req, reply) => {
      const serverId = id(req);
      const server = await getServer(opts.pool, serverId);
      if (!server) throw new HttpError(404, `no server ${serverId}`);
      const [transitions, incidents] = await Promise.all([listTransitions(opts.pool, serverId, 50), listIncidentsOf(opts.pool, serverId)]);
      return render(req, reply, `Server ${serverId.slice(0, 8)}`, serverPage(server, transitions, incidents));
    });

    app.get<ById>('/console/resources/:id', byId, async (req, reply) => {
      const resourceId = id(req);
      const resource = await getResource(opts.pool, opts.sealer, prefix, resourceId);
      if (!resource) throw new HttpError(404, `no resource ${resourceId}`);
      const incidents = await listIncidentsOf(opts.pool, resourceId);
      return render(req, reply, `Resource ${resourceId.slice(0, 8)}`, resourcePage(resource, incidents));
    });

    app.get('/console/incidents', async (req, reply) =>
      render(req, reply, 'Incidents', incidentsPage(await listIncidents(opts.pool, 200))),
    );

    app.get<ById>('/console/incidents/:id', byId, async (req, reply) => {
      const incidentId = id(req);
      const incident = await getIncident(opts.pool, incidentId);
      if (!incident) throw new HttpError(404, `no incident ${incidentId}`);
      return render(req, reply, `Incident ${incidentId.slice(0, 8)}`, incidentPage(incident, csrfField(session(req))));
    });

    /** An operator closes an incident: the exception was dealt with, or the condition accepted. */
    app.post<ById>('/console/incidents/:id/resolve', byId, async (req, reply) => {
      const incidentId = id(req);
      if (!(await resolveIncident(opts.pool, incidentId))) throw new HttpError(404, `no open incident ${incidentId}`);
      return reply.redirect(`/console/incidents/${incidentId}`, 303);
    });

    app.get('/console/jobs', async (req, reply) => {
      const jobs = await listDeadJobs(opts.pool);
      return render(req, reply, 'Dead jobs', deadJobsPage(jobs, csrfField(session(req))));
    });

    app.post<{ Params: { id: string } }>('/console/jobs/:id/retry', { schema: { params: jobParams } }, async (req, reply) => {
      const jobId = req.params.id;
      if (!(await retryDeadJob(opts.pool, jobId))) throw new HttpError(404, `no dead job ${jobId}`);
      return reply.redirect('/console/jobs', 303);
    });
  };
}
