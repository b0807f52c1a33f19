/** Everything that reaches HTML goes through here. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** The look every page shares: quiet, readable on a laptop. */
export const STYLE = `
  :root { --ink: #1d2330; --muted: #6b7385; --line: #e2e5ea; --bg: #f5f6f8; --ok: #17663a; --okbg: #e7f6ec;
    --warn: #7a5300; --warnbg: #fff4dc; --bad: #8f1d1d; --badbg: #fde8e8; --accent: #2952cc; }
  * { box-sizing: border-box; }
  body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: var(--ink); background: var(--bg); }
  main { max-width: 1100px; margin: 1.5rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1rem; margin: 0 0 .75rem; }
  a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
  .muted { color: var(--muted); }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; overflow-x: auto; }
  dl { display: grid; grid-template-columns: 9rem 1fr; gap: .35rem 1rem; margin: 0; }
  dt { color: var(--muted); } dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
  .state { display: inline-block; padding: .05rem .55rem; border-radius: 999px; background: var(--warnbg); color: var(--warn);
    font-weight: 600; font-size: .85rem; white-space: nowrap; }
  .state.ok { background: var(--okbg); color: var(--ok); } .state.bad { background: var(--badbg); color: var(--bad); }
  table { width: 100%; border-collapse: collapse; font-size: .92rem; }
  td, th { text-align: left; padding: .35rem .5rem; border-top: 1px solid #eef0f3; vertical-align: top; }
  th { color: var(--muted); font-weight: 500; border-top: 0; }
  td.mono, .mono { font-family: ui-monospace, monospace; font-size: .85rem; }
  button { font: inherit; padding: .3rem .8rem; border-radius: 6px; border: 1px solid var(--line); background: #fff; cursor: pointer; }
  button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
`;

export function page(title: string, body: string, extra = ''): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}${extra}</style></head><body>${body}</body></html>`;
}
