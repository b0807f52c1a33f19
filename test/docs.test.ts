import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FAULT_KINDS } from '../src/chaos/faults.ts';
import { chaosSettings } from '../src/chaos/options.ts';
import { CHAOS_RESULTS_PAGE, withChaosResults } from '../src/chaos/report.ts';
import { loadConfig } from '../src/config.ts';

/**
 * The docs promise commands, files and settings: every `npm run` script, repository path,
 * relative link, `pgfleet` command and environment variable they name must exist, so that
 * what a newcomer copies from them works. Reads files and runs `pgfleet help`; starts nothing.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const PAGES = ['README.md', 'bench/README.md', ...readdirSync(path.join(ROOT, 'docs')).map((f) => `docs/${f}`)].filter((f) =>
  f.endsWith('.md'),
);

interface Page {
  file: string;
  /** Fenced blocks and inline code spans, whitespace in a span made single spaces. */
  code: string[];
  /** Targets of `[text](target)` links outside code. */
  links: string[];
  headings: string[];
  /** Environment variables in the first column of tables headed `variable`. */
  variables: string[];
}

function parse(file: string, text: string): Page {
  const code: string[] = [];
  const prose: string[] = [];
  let fence: string[] | undefined;
  for (const line of text.split('\n')) {
    if (/^\s*```/.test(line)) {
      if (fence) code.push(fence.join('\n'));
      fence = fence ? undefined : [];
    } else if (fence) fence.push(line);
    else prose.push(line);
  }
  const body = prose.join('\n');
  code.push(...[...body.matchAll(/`([^`]+)`/g)].map((m) => m[1]!.replace(/\s+/g, ' ')));
  const withoutCode = body.replace(/`[^`]+`/g, '');
  const links = [...withoutCode.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!);
  const headings = prose.flatMap((l) => /^#{1,6}\s+(.*)$/.exec(l)?.[1] ?? []);
  const variables: string[] = [];
  let inVariables = false;
  for (const line of prose) {
    const first = /^\|([^|]*)\|/.exec(line)?.[1]?.trim();
    if (first === undefined) inVariables = false;
    else if (first === 'variable') inVariables = true;
    else if (inVariables) variables.push(...[...first.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!));
  }
  return { file, code, links, headings, variables };
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes. */
const anchor = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');

/** npm's own commands the docs use (`npm run` alone lists the scripts); every other `npm X` must be a script. */
const NPM_COMMANDS = new Set(['ci', 'install', 'run']);
const SCRIPTS = new Set(Object.keys((JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts));

/** Top-level entries of the repository that git keeps (not what .gitignore names). */
const ignored = read('.gitignore')
  .split('\n')
  .map((l) => l.trim().replace(/\/$/, ''))
  .filter(Boolean);
const TOP_LEVEL = new Set(readdirSync(ROOT).filter((f) => f !== '.git' && !ignored.includes(f)));

/** Every `pgfleet …` command line of `pgfleet help`, as its words: `servers create`, `credentials`. */
function knownCommands(): string[][] {
  const help = execFileSync(process.execPath, [path.join(ROOT, 'bin/pgfleet.js'), 'help'], { cwd: ROOT, encoding: 'utf8' });
  const commands = help.split('\n').flatMap((line) => {
    const words = /^\s*pgfleet (.*)$/.exec(line)?.[1]?.split(' ') ?? [];
    const end = words.findIndex((w) => !/^[a-z][a-z|-]*$/.test(w));
    const [first, ...rest] = end < 0 ? words : words.slice(0, end);
    return first ? first.split('|').map((alternative) => [alternative, ...rest]) : [];
  });
  // `help` itself printed the list.
  return [['help'], ...commands];
}

function problems(page: Page, commands: string[][]): string[] {
  const found: string[] = [];
  const where = (what: string) => found.push(`${page.file}: ${what}`);
  for (const text of page.code) {
    for (const m of text.matchAll(/(?<![\w-])npm (?:run ([a-z][\w:-]*)|([a-z][\w:-]*))/g)) {
      const [, script, command] = m;
      if (script ? !SCRIPTS.has(script) : !SCRIPTS.has(command!) && !NPM_COMMANDS.has(command!))
        where(`\`${m[0]}\` names no script of package.json`);
    }
    for (const m of text.matchAll(/(?<![\w./-])pgfleet ([a-z][a-z-]*(?: [a-z][a-z-]*)*)/g)) {
      const words = m[1]!.split(' ');
      if (!commands.some((c) => words.every((w, i) => c[i] === w))) where(`\`pgfleet ${m[1]}\` is no command of \`pgfleet help\``);
    }
  }
  for (const span of page.code) {
    const token = span.split(' ')[0]!.replace(/[.,;:)]+$/, '');
    if (!token.includes('/') || !TOP_LEVEL.has(token.split('/')[0]!)) continue;
    // `migrations/0001_*.sql`, `machines/<name>.ts`: the directory before the pattern.
    const pattern = token.search(/[*…<{]/);
    const file = pattern < 0 ? token : token.slice(0, token.lastIndexOf('/', pattern) + 1);
    if (!existsSync(path.join(ROOT, file))) where(`\`${token}\` is no file of the repository`);
  }
  for (const link of page.links) {
    if (/^[a-z]+:/.test(link)) continue;
    const [target = '', hash] = link.split('#');
    const file = target === '' ? page.file : path.join(path.dirname(page.file), target);
    if (target !== '' && !existsSync(path.join(ROOT, file))) where(`link ${link}: no ${file}`);
    else if (
      hash !== undefined &&
      file.endsWith('.md') &&
      !(target === '' ? page : parse(file, read(file))).headings.map(anchor).includes(hash)
    )
      where(`link ${link}: ${file} has no heading #${hash}`);
  }
  return found;
}

function sources(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => read(path.join(dir, f)));
}

/** Variables the code under `dirs` reads by name: `process.env.X`, `process.env['X']`, the benchmarks' `envInt('X')`. */
function variablesReadIn(...dirs: string[]): Set<string> {
  const names = new Set<string>();
  for (const text of dirs.flatMap(sources))
    for (const m of text.matchAll(/process\.env(?:\.|\[')([A-Z][A-Z0-9_]*)|envInt\('([A-Z][A-Z0-9_]*)'/g)) names.add((m[1] ?? m[2])!);
  return names;
}

/** What an operator sets: every variable the configuration and the game day's settings read, and any other read in the code. */
function operatorVariables(): Set<string> {
  const names = variablesReadIn('src', 'machines', 'observers');
  const recording = new Proxy({} as Record<string, string | undefined>, {
    get: (_target, name) => {
      if (typeof name === 'string') names.add(name);
      return undefined;
    },
  });
  loadConfig(recording);
  chaosSettings([], recording, FAULT_KINDS);
  // The system's own, which pgfleet passes on to the programs it runs.
  names.delete('PATH');
  return names;
}

const pages = PAGES.map((file) => parse(file, read(file)));
const variablesOf = (file: string) => new Set(pages.find((p) => p.file === file)!.variables);
const missing = (names: Iterable<string>, from: Set<string>) => [...names].filter((n) => !from.has(n)).sort();

describe('the docs', () => {
  const commands = knownCommands();

  it.each(PAGES)('%s: its scripts, paths, links and pgfleet commands exist', (file) => {
    expect(
      problems(
        pages.find((p) => p.file === file)!,
        commands,
      ),
    ).toEqual([]);
  });

  it('finds a script, a path, a link, an anchor or a command that does not exist', () => {
    const page = parse(
      'docs/broken.md',
      [
        '# Broken',
        'Run `npm run no-such-script`, read `src/no-such-file.ts` and `machines/<name>.ts`.',
        'See [nowhere](nowhere.md), [there](architecture.md#no-such-heading), [here](#broken) and [up](#nothing).',
        '```sh',
        'npm test && npm frobnicate',
        'npx pgfleet servers frobnicate <id>',
        'npx pgfleet servers show <id>',
        '```',
      ].join('\n'),
    );
    expect(problems(page, commands)).toEqual([
      'docs/broken.md: `npm frobnicate` names no script of package.json',
      'docs/broken.md: `pgfleet servers frobnicate` is no command of `pgfleet help`',
      'docs/broken.md: `npm run no-such-script` names no script of package.json',
      'docs/broken.md: `src/no-such-file.ts` is no file of the repository',
      'docs/broken.md: link nowhere.md: no docs/nowhere.md',
      'docs/broken.md: link architecture.md#no-such-heading: docs/architecture.md has no heading #no-such-heading',
      'docs/broken.md: link #nothing: docs/broken.md has no heading #nothing',
    ]);
  });

  it('documents in configuration.md every variable an operator sets, and no other', () => {
    const documented = variablesOf('docs/configuration.md');
    const read = operatorVariables();
    expect({ undocumented: missing(read, documented), notRead: missing(documented, read) }).toEqual({ undocumented: [], notRead: [] });
  });

  it('documents in bench/README.md the variables of the benchmarks, and every variable a page documents is read', () => {
    const bench = variablesReadIn('bench');
    const documented = new Set([...variablesOf('bench/README.md'), ...variablesOf('docs/configuration.md')]);
    expect(missing(bench, documented)).toEqual([]);
    const read = new Set([...operatorVariables(), ...bench, ...variablesReadIn('test')]);
    expect(missing(new Set(pages.flatMap((p) => p.variables)), read)).toEqual([]);
  });

  it('keeps the markers npm run chaos writes its table between on the page it writes', () => {
    const page = read(CHAOS_RESULTS_PAGE);
    const written = withChaosResults(page, 'the table');
    expect(written).toContain('\nthe table\n<!-- end of chaos results -->');
    expect(withChaosResults(written, 'another table')).toBe(withChaosResults(page, 'another table'));
    expect(() => withChaosResults(read('README.md'), 'the table')).toThrow(/no <!-- chaos results/);
  });
});
