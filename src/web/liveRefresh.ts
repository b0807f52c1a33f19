import { createHash } from 'node:crypto';

/**
 * Pages refresh themselves: every few seconds the page asks for itself again and swaps in
 * its <main>, so a console left open keeps up without a full reload (and keeps its scroll).
 */
const LIVE_CODE = `
(() => {
  setInterval(async () => {
    try {
      const res = await fetch(location.href, { headers: { 'x-pgfleet-partial': '1' }, credentials: 'same-origin' });
      if (!res.ok) return;
      document.querySelector('main').innerHTML = await res.text();
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
    } catch {}
  }, 2000);
})();
`;
export const LIVE_SCRIPT = `<script>${LIVE_CODE}</script>`;
/** The pages' content security policy lets this one script run, and no other. */
export const LIVE_SCRIPT_HASH = `sha256-${createHash('sha256').update(LIVE_CODE).digest('base64')}`;
