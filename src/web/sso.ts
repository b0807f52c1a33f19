import type { ResourceView } from '../resources.ts';
import { escapeHtml, page } from './html.ts';
import type { TransitionView } from '../servers.ts';
import { renderTlsSection } from './tls.ts';

function events(transitions: TransitionView[]): string {
  if (transitions.length === 0) return '<p class="muted">Nothing has happened yet.</p>';
  const rows = transitions
    .slice(0, 20)
    .map((t) => `<tr><td>${escapeHtml(new Date(t.at).toISOString().replace('T', ' ').slice(0, 19))} UTC</td><td>${escapeHtml(t.to)}</td><td class="muted">${escapeHtml(t.event)}</td></tr>`)
    .join('');
  return `<table><thead><tr><th>When</th><th>State</th><th>Because of</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/** The page a customer lands on from the platform's dashboard: their database, nobody else's. */
export interface CustomerNotice {
  at: Date;
  subject: string;
  body: string;
}

function notices(list: CustomerNotice[]): string {
  if (list.length === 0) return '<p class="muted">No incidents or maintenance to tell you about.</p>';
  return list.map((n) => `<p><b>${escapeHtml(n.subject)}</b> <span class="muted">${escapeHtml(new Date(n.at).toISOString().replace('T', ' ').slice(0, 16))} UTC</span><br>${escapeHtml(n.body)}</p>`).join('');
}

export function renderResourcePage(resource: ResourceView & { transitions: TransitionView[] }, prefix: string, notifications: CustomerNotice[], caCertificate: string): string {
  const url = resource.config[`${prefix}_URL`];
  const parsed = url ? new URL(url) : undefined;
  const connection = parsed
    ? `<dl>
        <dt>Host</dt><dd>${escapeHtml(parsed.hostname)}</dd>
        <dt>Port</dt><dd>${escapeHtml(parsed.port)}</dd>
        <dt>Database</dt><dd>${escapeHtml(parsed.pathname.slice(1))}</dd>
        <dt>User</dt><dd>${escapeHtml(parsed.username)}</dd>
        <dt>Password</dt><dd><details><summary>show</summary>${escapeHtml(decodeURIComponent(parsed.password))}</details></dd>
        <dt>${escapeHtml(`${prefix}_URL`)}</dt><dd><details><summary>show</summary>${escapeHtml(url)}</details></dd>
      </dl>`
    : '<p class="muted">The connection details appear here as soon as the database is ready.</p>';
  const busy = resource.state !== 'available';
  return page(
    `${resource.name ?? 'Database'} · pgfleet`,
    `<main><h1>${escapeHtml(resource.name ?? resource.id)}</h1>
     <p class="muted">Plan <b>${escapeHtml(resource.plan)}</b> · region ${escapeHtml(resource.region)} · created ${escapeHtml(new Date(resource.createdAt).toISOString().slice(0, 10))}</p>
     <section><h2>State</h2><span class="state${busy ? '' : ' ok'}">${escapeHtml(resource.state)}</span>
       ${resource.lastError && busy ? `<p class="muted">Working on: ${escapeHtml(resource.lastError)}</p>` : ''}</section>
     <section><h2>Connection</h2>${connection}</section>
     <section><h2>TLS</h2>${renderTlsSection(caCertificate, `${prefix}_URL`)}</section>
     <section><h2>Notices</h2>${notices(notifications)}</section>
     <section><h2>Recent events</h2>${events(resource.transitions)}</section></main>`,
  );
}

export function renderSsoError(message: string): string {
  return page('pgfleet', `<main><section><h2>Cannot open this database</h2><p>${escapeHtml(message)}</p></section></main>`);
}
