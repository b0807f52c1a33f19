/**
 * The console's pieces of HTML, shared by its pages: its style, state badges, times, tables,
 * and the picture of a machine.
 */
import type { AnyStateMachine } from 'xstate';
import type { IncidentView, TimelineEntry } from '../incidents/views.ts';
import type { TransitionView } from '../runner/store.ts';
import { escapeHtml as h } from './html.ts';

export const CONSOLE_STYLE = `
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
export function stateBadge(state: string): string {
  const top = state.split('.')[0]!;
  const cls = ['available', 'resolved', 'deleted'].includes(top)
    ? ' ok'
    : ['failed', 'unreachable', 'escalated', 'unsynchronized', 'stalled'].includes(top) || state.endsWith('.failed')
      ? ' bad'
      : '';
  return `<span class="state${cls}">${h(state)}</span>`;
}

export const ago = (d: Date | string | null) => {
  if (!d) return 'never';
  const s = Math.max(0, Math.round((Date.now() - new Date(d).getTime()) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};
export const time = (d: Date | string) => `${new Date(d).toISOString().replace('T', ' ').slice(0, 19)}`;
export const table = (head: string[], rows: string[][], empty: string) =>
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

export function transitionsTable(transitions: TransitionView[]): string {
  return table(
    ['at (UTC)', 'from', 'to', 'event'],
    transitions.map((t) => [time(t.at), h(t.from ?? '∅'), stateBadge(t.to), h(t.event)]),
    'No transitions yet.',
  );
}

export function incidentsTable(incidents: IncidentView[]): string {
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

export function timelineTable(entries: TimelineEntry[]): string {
  return `<table class="timeline"><thead><tr><th>at (UTC)</th><th>what</th><th>from</th><th></th></tr></thead><tbody>${entries
    .map(
      (e) =>
        `<tr data-kind="${h(e.kind)}"><td class="mono">${h(e.at.replace('T', ' ').slice(0, 23))}</td>` +
        `<td class="kind">${h(e.kind)}</td><td>${h(e.source)}</td><td>${h(e.summary)}</td></tr>`,
    )
    .join('')}</tbody></table>`;
}
