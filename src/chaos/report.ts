import { kindTable } from './checks.ts';
import type { ChaosResult } from './run.ts';

const ms = (v: number) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–');

/** The run in markdown: the table per fault kind, what failed, and (`everyFault`) each fault with what the tool noticed. */
export function chaosMarkdown(result: ChaosResult, context: string[] = [], everyFault = true): string {
  const verdict =
    result.failures.length === 0
      ? 'no row lost, no split brain, no database stuck'
      : `${result.failures.length} failure${result.failures.length === 1 ? '' : 's'}`;
  return [
    `Chaos run: ${result.faults.length} faults, seed ${result.seed}, whole-again bound ${result.wholeBoundS} s, ` +
      `${Math.round(result.durationMs / 1000)} s in all: ${verdict}.`,
    ...context,
    '',
    kindTable(result.table),
    '',
    ...(result.failures.length ? ['Failures:', '', ...result.failures.map((f) => `- ${f}`), ''] : []),
    ...(everyFault ? [] : ['Every fault, with what the tool noticed, is in `bench/results/chaos.md`.', '']),
    'Databases: ' +
      result.databases
        .map(
          (d) =>
            `${d.id.slice(0, 8)} ${d.acknowledged.toLocaleString('en-US')} commits acknowledged, ` +
            `${d.reads.toLocaleString('en-US')} read-only reads (${d.readFailures} failed)`,
        )
        .join('; ') +
      `. Split-brain poll: ${result.polls.toLocaleString('en-US')} rounds.`,
    ...(everyFault ? everyFaultTable(result) : []),
    '',
  ].join('\n');
}

function everyFaultTable(result: ChaosResult): string[] {
  return [
    '',
    '<details><summary>Every fault</summary>',
    '',
    '| # | fault | database | first commit ms | whole ms | write gap ms | lost | split | ' +
      'incidents opened / open | dead jobs | crashes | notes |',
    '| --: | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --- |',
    ...result.faults.map(
      (f) =>
        `| ${f.n} | ${f.kind} | ${f.resourceId.slice(0, 8)} | ${ms(f.firstCommitMs)} | ${f.stuck ? 'stuck' : ms(f.wholeMs)} | ` +
        `${ms(f.writeGapMs)} | ${f.rowsLost} | ${f.splitBrains} | ${f.incidentsOpened} / ${f.incidentsUnresolved} | ` +
        `${f.deadJobs} | ${f.crashes} | ${f.notes.join('; ').replace(/\|/g, '\\|')} |`,
    ),
    '',
    '</details>',
  ];
}

/** The page `npm run chaos` writes its table into, from the repository's root, between these markers. */
export const CHAOS_RESULTS_PAGE = 'bench/README.md';
const MARKERS = ['<!-- chaos results: written by npm run chaos -->', '<!-- end of chaos results -->'] as const;

/** `page` with `md` between the chaos markers. */
export function withChaosResults(page: string, md: string): string {
  const [begin, end] = MARKERS;
  const from = page.indexOf(begin);
  const to = page.indexOf(end);
  if (from < 0 || to < from) throw new Error(`${CHAOS_RESULTS_PAGE} has no ${begin} … ${end} section`);
  return `${page.slice(0, from + begin.length)}\n${md.trimEnd()}\n${page.slice(to)}`;
}
