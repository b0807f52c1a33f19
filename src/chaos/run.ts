/**
 * PGMonkey, ours: seeded random faults, one at a time, against `ha` databases under
 * writers, each judged before the next: every acknowledged row still there, never two
 * writable primaries (asked of the servers themselves, all through the run), whole again
 * within a bound, incidents opened and resolved, no dead job. `npm run chaos` runs it
 * against the Procfile layout it starts (bench/chaos.ts), `pgfleet chaos` against a running
 * deployment (src/chaos/gameDay.ts).
 */
import { failures, longestGap, summarize, type FaultResult, type KindRow } from './checks.ts';
import { deadJobsSince, incidentsSince, serverIds, whole, type Deployment, type Whole } from './deployment.ts';
import { FAILOVER_FAULTS, inject, type FaultKind } from './faults.ts';
import { Frozen } from './processes.ts';
import { SplitBrainWatch } from './watch.ts';
import { sleep, wallMs, type ChaosReader, type ChaosWriter } from './writer.ts';

export interface ChaosDatabase {
  id: string;
  writer: ChaosWriter;
  reader?: ChaosReader;
}

export interface ChaosOptions {
  faults: number;
  seed: number;
  kinds: FaultKind[];
  /** Seconds a database has to be whole again after a fault before it counts as stuck. */
  wholeBoundS: number;
  log(line: string): void;
  /** What the faults freeze; the caller's to thaw on a signal, before it stops any server. */
  frozen?: Frozen;
}

export interface ChaosResult {
  seed: number;
  kinds: FaultKind[];
  wholeBoundS: number;
  faults: FaultResult[];
  table: KindRow[];
  failures: string[];
  /** Why the run ended before its count, when it did. */
  stoppedEarly?: string;
  /** Rounds of the split-brain poll over the run. */
  polls: number;
  /** Per database: commits acknowledged, and reads answered and failed through the read-only URL. */
  databases: { id: string; acknowledged: number; reads: number; readFailures: number }[];
  durationMs: number;
}

/** mulberry32: a small seeded generator, so that a run can be made again from its seed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes stopped longer than this with no incident opened is worth a note: customers noticed, pgfleet did not say. */
const SILENT_GAP_MS = 5000;

/** A seeded Fisher–Yates shuffle. */
export function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * Every database whole (observed since `since`, when given), polled every 200 ms until `deadline`:
 * the pairs, or what the last look saw missing.
 */
async function allWhole(
  dep: Deployment,
  dbs: readonly ChaosDatabase[],
  deadline: number,
  since?: number,
): Promise<{ at: number; pairs: Map<string, Whole> } | string> {
  for (;;) {
    const seen = await Promise.all(dbs.map(async (db) => [db.id, await whole(dep, db.id, db.writer.url, since)] as const));
    const missing = seen.filter(([, w]) => typeof w === 'string').map(([id, w]) => `${id.slice(0, 8)}: ${w as string}`);
    if (missing.length === 0) return { at: wallMs(), pairs: new Map(seen as [string, Whole][]) };
    if (wallMs() > deadline) return missing.join('; ');
    await sleep(200);
  }
}

export async function runChaos(dep: Deployment, dbs: readonly ChaosDatabase[], opts: ChaosOptions): Promise<ChaosResult> {
  const started = wallMs();
  const random = seeded(opts.seed);
  const boundMs = opts.wholeBoundS * 1000;
  const watch = new SplitBrainWatch(
    dep.pool,
    dep.sealer,
    dbs.map((d) => d.id),
  );
  const frozen = opts.frozen ?? new Frozen();
  const results: FaultResult[] = [];
  const lost = new Map(dbs.map((d) => [d.id, new Set<number>()]));
  /** Databases whose rows could not be read back after the last fault: read again after the next. */
  const unread = new Map<string, string>();
  /** Acknowledged rows not read back that were not missing before, over every database. */
  const readBack = async () => {
    let count = 0;
    const notes: string[] = [];
    for (const db of dbs) {
      try {
        const known = lost.get(db.id)!;
        const missing = (await db.writer.missing()).filter((m) => !known.has(m));
        for (const m of missing) known.add(m);
        count += missing.length;
        if (missing.length)
          notes.push(`${db.id.slice(0, 8)} lost rows ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''}`);
        unread.delete(db.id);
      } catch (err) {
        unread.set(db.id, (err as Error).message);
        notes.push(`${db.id.slice(0, 8)}: rows not read back (${(err as Error).message}); read again after the next fault`);
      }
    }
    return { lost: count, notes };
  };
  // Kinds are dealt from shuffled decks of one of each: random order, even counts per kind.
  const deck: FaultKind[] = [];
  let stoppedEarly: string | undefined;
  await watch.start();
  try {
    let ready = await allWhole(dep, dbs, wallMs() + boundMs);
    for (let n = 1; n <= opts.faults; n++) {
      if (typeof ready === 'string') {
        stoppedEarly = `not every database was whole before fault ${n} (${ready})`;
        break;
      }
      if (deck.length === 0) deck.push(...shuffled(opts.kinds, random));
      const kind = deck.pop()!;
      const target = dbs[Math.floor(random() * dbs.length)]!;
      const before = ready.pairs.get(target.id)!;
      // Commits on either side of the fault, so the write gap is measured from a flowing writer.
      await sleep(500);
      const at = wallMs();
      const deadline = at + boundMs;
      const notes = await inject(kind, { dep, resourceId: target.id, writer: target.writer, before, frozen, deadline, random }).catch(
        (err: unknown) => [`the fault failed: ${(err as Error).message}`],
      );
      const after = await allWhole(dep, dbs, deadline, at);
      frozen.thaw();
      const stuck = typeof after === 'string';
      const end = stuck ? deadline : after.at;
      if (stuck) notes.push(`not whole within ${opts.wholeBoundS} s: ${after}`);

      const first = FAILOVER_FAULTS.has(kind)
        ? await target.writer.firstElsewhere(at, before.primary.port!).catch(() => undefined)
        : undefined;
      // After two failovers the first primary may rightly be the primary again.
      if (
        FAILOVER_FAULTS.has(kind) &&
        kind !== 'double-failover' &&
        typeof after !== 'string' &&
        after.pairs.get(target.id)?.primary.id === before.primary.id
      )
        notes.push('no failover: the same primary is back');
      const { lost: rowsLost, notes: readNotes } = await readBack();
      notes.push(...readNotes);

      // Incidents: opened since the fault, and given a few seconds past whole to resolve.
      const entities = new Set([
        ...dbs.map((d) => d.id),
        ...(await serverIds(
          dep,
          dbs.map((d) => d.id),
        ).catch(() => [])),
      ]);
      let incidents = await incidentsSince(dep, at, entities).catch(() => undefined);
      for (const settle = wallMs() + 10_000; incidents && incidents.open.length > 0 && wallMs() < settle;) {
        await sleep(250);
        incidents = await incidentsSince(dep, at, entities).catch(() => incidents);
      }
      if (!incidents) notes.push('incidents not read');
      // Which is left open, and where its entity is: enough to tell why it did not resolve.
      for (const i of incidents?.open ?? [])
        notes.push(
          `incident still open: "${i.reason}" (${i.state}) of ${i.entity.kind} ${i.entity.id.slice(0, 8)}, ` +
            `which is ${i.entity.state ?? 'gone'}`,
        );
      const writeGapMs = Math.max(...dbs.map((d) => longestGap(d.writer.acknowledgedAt, at, end)));
      if (first !== undefined && incidents?.opened.length === 0) notes.push('a failover with no incident opened');
      else if (writeGapMs > SILENT_GAP_MS && incidents?.opened.length === 0)
        notes.push(`writes stopped ${(writeGapMs / 1000).toFixed(1)} s with no incident opened`);
      const dead = await deadJobsSince(dep, at).catch(() => [] as string[]);
      for (const d of dead) notes.push(`dead job ${d}`);
      const crashes = dep.processes?.crashes(at, wallMs()) ?? [];
      notes.push(...crashes);

      const result: FaultResult = {
        n,
        kind,
        resourceId: target.id,
        at,
        firstCommitMs: first !== undefined && first <= end ? first - at : NaN,
        wholeMs: stuck ? NaN : end - at,
        writeGapMs,
        rowsLost,
        splitBrains: watch.between(at, end).length,
        stuck,
        incidentsOpened: incidents?.opened.length ?? 0,
        incidentsUnresolved: incidents?.open.length ?? 0,
        deadJobs: dead.length,
        crashes: crashes.length,
        notes,
      };
      results.push(result);
      opts.log(line(result, opts.faults));
      // A stuck database gets three more bounds to come back (a job held by a dead worker
      // holds for PGFLEET_JOB_LEASE, 120 s by default) before the run gives up on it.
      ready = stuck ? await allWhole(dep, dbs, wallMs() + 3 * boundMs, at) : after;
      if (stuck && typeof ready !== 'string') result.notes.push(`whole again ${Math.round((ready.at - at) / 1000)} s after the fault`);
    }
    // Rows of the last faults, and of any fault after which they could not be read.
    const last = results.at(-1);
    if (last) {
      const end = await readBack();
      last.rowsLost += end.lost;
      last.notes.push(...end.notes.map((n) => `at the end of the run: ${n}`));
    }
  } finally {
    frozen.thaw();
    await watch.stop();
  }
  // Split brains by when they began, each counted once: in the fault whose time it fell in.
  for (const [i, f] of results.entries()) {
    const next = results[i + 1]?.at ?? Infinity;
    f.splitBrains = watch.splitBrains.filter((s) => s.from >= f.at && s.from < next).length;
  }
  const kinds = opts.kinds;
  return {
    seed: opts.seed,
    kinds,
    wholeBoundS: opts.wholeBoundS,
    faults: results,
    table: summarize(results, kinds),
    failures: [
      ...failures(results),
      ...[...unread].map(([id, why]) => `${id.slice(0, 8)}: acknowledged rows could not be read back at the end (${why})`),
      ...(stoppedEarly ? [`stopped early: ${stoppedEarly}`] : []),
    ],
    ...(stoppedEarly ? { stoppedEarly } : {}),
    polls: watch.polls,
    databases: dbs.map((d) => ({
      id: d.id,
      acknowledged: d.writer.acknowledged.length,
      reads: d.reader?.answeredAt.length ?? 0,
      readFailures: d.reader?.failures ?? 0,
    })),
    durationMs: wallMs() - started,
  };
}

const fmt = (v: number) => (Number.isFinite(v) ? `${Math.round(v)} ms` : '–');

function line(f: FaultResult, total: number): string {
  const verdict = f.rowsLost || f.splitBrains || f.stuck ? 'FAIL' : 'ok';
  return (
    `fault ${f.n}/${total} ${f.kind} on ${f.resourceId.slice(0, 8)}: ${verdict}; ` +
    `first commit ${fmt(f.firstCommitMs)}, whole ${fmt(f.wholeMs)}, write gap ${fmt(f.writeGapMs)}, ` +
    `${f.rowsLost} lost, ${f.splitBrains} split-brain, incidents ${f.incidentsOpened} opened/${f.incidentsUnresolved} open, ` +
    `${f.deadJobs} dead jobs, ${f.crashes} process crashes` +
    (f.notes.length ? `\n    ${f.notes.join('\n    ')}` : '')
  );
}
