import type { ResourceView } from '../resources.ts';
import type { TransitionView } from '../servers.ts';

/** Everything that reaches HTML goes through here. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const STYLE = `
  body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
  main { max-width: 760px; margin: 2rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  .muted { color: #6b7385; }
  section { background: #fff; border: 1px solid #e2e5ea; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }
  h2 { font-size: 1rem; margin: 0 0 .75rem; }
  dl { display: grid; grid-template-columns: 9rem 1fr; gap: .35rem 1rem; margin: 0; }
  dt { color: #6b7385; } dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
  .state { display: inline-block; padding: .1rem .6rem; border-radius: 999px; background: #e7f6ec; color: #17663a; font-weight: 600; }
  .state.busy { background: #fff4dc; color: #7a5300; }
  table { width: 100%; border-collapse: collapse; } td, th { text-align: left; padding: .3rem .5rem; border-top: 1px solid #eef0f3; }
  th { color: #6b7385; font-weight: 500; }
`;

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body><main>${body}</main></body></html>`;
}

function events(transitions: TransitionView[]): string {
  if (transitions.length === 0) return '<p class="muted">Nothing has happened yet.</p>';
  const rows = transitions
    .slice(0, 20)
    .map((t) => `<tr><td>${escapeHtml(new Date(t.at).toISOString().replace('T', ' ').slice(0, 19))} UTC</td><td>${escapeHtml(t.to)}</td><td class="muted">${escapeHtml(t.event)}</td></tr>`)
    .join('');
  return `<table><thead><tr><th>When</th><th>State</th><th>Because of</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/** The page a customer lands on from the platform's dashboard: their database, nobody else's. */
export function renderResourcePage(resource: ResourceView & { transitions: TransitionView[] }, prefix: string): string {
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
    `<h1>${escapeHtml(resource.name ?? resource.id)}</h1>
     <p class="muted">Plan <b>${escapeHtml(resource.plan)}</b> · region ${escapeHtml(resource.region)} · created ${escapeHtml(new Date(resource.createdAt).toISOString().slice(0, 10))}</p>
     <section><h2>State</h2><span class="state${busy ? ' busy' : ''}">${escapeHtml(resource.state)}</span>
       ${resource.lastError && busy ? `<p class="muted">Working on: ${escapeHtml(resource.lastError)}</p>` : ''}</section>
     <section><h2>Connection</h2>${connection}</section>
     <section><h2>Recent events</h2>${events(resource.transitions)}</section>`,
  );
}

export function renderSsoError(message: string): string {
  return page('pgfleet', `<section><h2>Cannot open this database</h2><p>${escapeHtml(message)}</p></section>`);
}
