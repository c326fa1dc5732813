/**
 * docs/operations.md "Log lines to alert on" stays in step with the code (docs-as-tests): every warn, error and
 * fatal line src/ writes is a row there, at its level, and every row is a line src/ still writes. Operators
 * alert on these `msg` texts, so a renamed or new line must change the doc in the same commit.
 *
 * The scanner is a small TypeScript lexer (comments, quoted strings, template literals with nested `${}`,
 * regex literals), not a line grep: a call may span lines, and a comment or a string may mention `log.warn(`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RESTART_ONLY_KEYS, restartOnlyChanges } from '../../src/config/restart-only.js';
import type { LbConfig } from '../../src/config/types.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SECTION = 'Log lines to alert on';
const LEVELS = ['warn', 'error', 'fatal'] as const;
type Level = (typeof LEVELS)[number];

// ── the lexer ───────────────────────────────────────────────────────────────────────────────────────────────

interface Token {
  kind: 'id' | 'punct' | 'string' | 'template' | 'number' | 'regex';
  text: string;
  /** A string's value, or a template's when it has no `${}`; null otherwise. */
  value: string | null;
  start: number;
  end: number;
}

const KEYWORDS_BEFORE_EXPRESSION = new Set(['return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do', 'else', 'yield', 'await']);

function unescapeJs(raw: string): string {
  return raw.replace(/\\(u\{[0-9a-fA-F]+\}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|\r\n|[\s\S])/g, (_, e: string) => {
    if (e.length > 1 && e[0] === 'u') return String.fromCodePoint(parseInt(e[1] === '{' ? e.slice(2, -1) : e.slice(1), 16));
    if (e.length === 3 && e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
    const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', b: '\b', f: '\f', v: '\v', '0': '\0', '\n': '', '\r': '', '\r\n': '' };
    return simple[e] ?? e;
  });
}

/** Tokens of `src` from `start`; `nested`: stop after the `}` that closes a template's `${`. */
function lex(src: string, start = 0, nested = false): { tokens: Token[]; end: number } {
  const tokens: Token[] = [];
  let i = start;
  let depth = 0;
  const push = (kind: Token['kind'], from: number, to: number, value: string | null = null): void => {
    tokens.push({ kind, text: src.slice(from, to), value, start: from, end: to });
  };
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (src.startsWith('//', i)) {
      const nl = src.indexOf('\n', i);
      i = nl < 0 ? src.length : nl;
    } else if (src.startsWith('/*', i)) {
      const close = src.indexOf('*/', i + 2);
      i = close < 0 ? src.length : close + 2;
    } else if (/[A-Za-z_$]/.test(c)) {
      const m = /^[\w$]+/.exec(src.slice(i, i + 200))!;
      push('id', i, i + m[0].length);
      i += m[0].length;
    } else if (/[0-9]/.test(c)) {
      const m = /^[\w.]+/.exec(src.slice(i, i + 100))!;
      push('number', i, i + m[0].length);
      i += m[0].length;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === '\\' ? 2 : 1;
      push('string', i, j + 1, unescapeJs(src.slice(i + 1, j)));
      i = j + 1;
    } else if (c === '`') {
      let j = i + 1;
      let raw = '';
      let substituted = false;
      while (j < src.length && src[j] !== '`') {
        if (src[j] === '\\') {
          raw += src.slice(j, j + 2);
          j += 2;
        } else if (src.startsWith('${', j)) {
          substituted = true;
          j = lex(src, j + 2, true).end;
        } else {
          raw += src[j];
          j++;
        }
      }
      push('template', i, j + 1, substituted ? null : unescapeJs(raw));
      i = j + 1;
    } else if (c === '/' && regexAllowed(tokens.at(-1))) {
      let j = i + 1;
      let inClass = false;
      while (j < src.length && (inClass || src[j] !== '/')) {
        if (src[j] === '\\') j++;
        else if (src[j] === '[') inClass = true;
        else if (src[j] === ']') inClass = false;
        j++;
      }
      j++;
      while (j < src.length && /[a-z]/.test(src[j]!)) j++;
      push('regex', i, j);
      i = j;
    } else if (c === '?' && src[i + 1] === '.' && !/[0-9]/.test(src[i + 2] ?? '')) {
      push('punct', i, i + 2);
      i += 2;
    } else {
      if (nested && c === '{') depth++;
      if (nested && c === '}' && depth-- === 0) return { tokens, end: i + 1 };
      push('punct', i, i + 1);
      i++;
    }
  }
  return { tokens, end: i };
}

function regexAllowed(prev: Token | undefined): boolean {
  if (prev === undefined) return true;
  if (prev.kind === 'id') return KEYWORDS_BEFORE_EXPRESSION.has(prev.text);
  if (prev.kind === 'punct') return !(prev.text === ')' || prev.text === ']' || prev.text === '}');
  return false;
}

// ── the calls ───────────────────────────────────────────────────────────────────────────────────────────────

interface Call {
  file: string; // relative to the repo, e.g. src/run.ts
  line: number;
  /** `this.log`, `app.log` (`?.` written as `.`), `r.out`; '(expression)' when it is not a plain name chain. */
  receiver: string;
  method: string;
  /** The last argument: its value when it is one string or one template without `${}`, else null. */
  message: string | null;
  /** The last argument's source text, whitespace collapsed. */
  lastArgument: string;
  /** The first argument's own keys when it is an object literal (`{ a, b: 1, ...c }` gives a, b), else []. */
  fieldKeys: string[];
}

/** The top-level keys of an object literal's tokens (`{` first), spreads and computed keys left out. */
function objectKeys(tokens: Token[]): string[] {
  if (tokens[0]?.text !== '{') return [];
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.kind === 'punct' && '([{'.includes(t.text)) depth++;
    else if (t.kind === 'punct' && ')]}'.includes(t.text)) depth--;
    else if (depth === 1 && (t.kind === 'id' || t.kind === 'string') && (tokens[i - 1]!.text === '{' || tokens[i - 1]!.text === ',') && [':', ',', '}'].includes(tokens[i + 1]?.text ?? '')) keys.push(t.value ?? t.text);
  }
  return keys;
}

function isDot(t: Token | undefined): boolean {
  return t !== undefined && t.kind === 'punct' && (t.text === '.' || t.text === '?.');
}

function receiverOf(tokens: Token[], last: number): string {
  const parts: string[] = [];
  let j = last;
  while (j >= 0 && tokens[j]!.kind === 'id') {
    parts.unshift(tokens[j]!.text);
    if (!isDot(tokens[j - 1])) break;
    j -= 2;
  }
  return parts.length === 0 ? '(expression)' : parts.join('.');
}

/** The top-level arguments of the call whose `(` is at `open`. */
function argumentsAt(tokens: Token[], open: number): Token[][] {
  const args: Token[][] = [[]];
  let depth = 0;
  for (let m = open; m < tokens.length; m++) {
    const x = tokens[m]!;
    if (x.kind === 'punct' && '([{'.includes(x.text)) {
      if (++depth === 1) continue;
    } else if (x.kind === 'punct' && ')]}'.includes(x.text)) {
      if (--depth === 0) break;
    } else if (depth === 1 && x.kind === 'punct' && x.text === ',') {
      args.push([]);
      continue;
    }
    args.at(-1)!.push(x);
  }
  return args.filter((a) => a.length > 0);
}

/** Calls `RECEIVER.NAME(...)` for the method names in `names`, and `RECEIVER[...](...)` on a receiver named like a logger. */
function scanCalls(src: string, file: string, names: ReadonlySet<string>): { calls: Call[]; computedLevel: Array<{ file: string; line: number; receiver: string }> } {
  const { tokens } = lex(src);
  const lineOf = (offset: number): number => src.slice(0, offset).split('\n').length;
  const calls: Call[] = [];
  const computedLevel: Array<{ file: string; line: number; receiver: string }> = [];
  for (let k = 0; k < tokens.length; k++) {
    const t = tokens[k]!;
    if (t.kind !== 'id') continue;
    const next = tokens[k + 1];
    if (names.has(t.text) && isDot(tokens[k - 1]) && next?.kind === 'punct' && next.text === '(') {
      const args = argumentsAt(tokens, k + 1);
      const last = args.at(-1) ?? [];
      const only = last.length === 1 ? last[0]! : null;
      calls.push({
        file,
        line: lineOf(t.start),
        receiver: receiverOf(tokens, k - 2),
        method: t.text,
        message: only !== null && (only.kind === 'string' || only.kind === 'template') ? only.value : null,
        lastArgument: last.length === 0 ? '' : src.slice(last[0]!.start, last.at(-1)!.end).replace(/\s+/g, ' '),
        fieldKeys: args.length > 1 ? objectKeys(args[0]!) : [],
      });
    } else if (/log$/i.test(t.text) && next?.kind === 'punct' && next.text === '[') {
      let depth = 0;
      let m = k + 1;
      for (; m < tokens.length; m++) {
        if (tokens[m]!.text === '[') depth++;
        else if (tokens[m]!.text === ']' && --depth === 0) break;
      }
      if (tokens[m + 1]?.text === '(') computedLevel.push({ file, line: lineOf(t.start), receiver: receiverOf(tokens, k) });
    }
  }
  return { calls, computedLevel };
}

// ── what src/ logs ──────────────────────────────────────────────────────────────────────────────────────────

/** src/**\/*.ts without src/demo (the demo brokers are not the balancer), as repo-relative paths. */
function sourceFiles(): string[] {
  return readdirSync(`${ROOT}src`, { recursive: true, encoding: 'utf8' })
    .map((f) => `src/${f.split('\\').join('/')}`)
    .filter((f) => f.endsWith('.ts') && !f.startsWith('src/demo/'))
    .sort();
}

/** Loggers: pino's Logger (`log`, `this.log`, `ctx.log`, `app?.log` ...), failover's LogSink, and its RateLimitedLog (`dropLog`, `sendErrors`). */
function isLogger(receiver: string): boolean {
  return /(^|\.)(log|\w+Log|sendErrors)$/.test(receiver);
}

/**
 * Not log lines: in src/config, `r.error(slot, ...)`, `out.warn(offset, path, ...)` and the like collect config
 * problems, printed as `FILE:LINE:COL key.path: message` (docs/configuration.md, docs/errors.md).
 */
const PROBLEM_SINKS = new Set(['r', 'r.out', 'out', 'this', 'this.out', 'this.r', 'this.r.out']);

/**
 * Log calls whose message is not a literal, by file and the source text of that argument, with the messages it
 * can be (each must be documented). A new computed message fails the test until it is listed here.
 */
const COMPUTED: Array<{ file: string; argument: string; why: string; messages: () => string[] }> = [
  {
    file: 'src/app.ts',
    argument: '`${c.key} change needs a restart`',
    why: 'one line per restart-only key a reload changed: the keys restartOnlyChanges() knows',
    messages: () => {
      const a = { admin: { bind: '127.0.0.1:9883' }, workers: 1, log: { bufferBytes: 1 }, warmUp: 0 } as unknown as LbConfig;
      const b = { admin: { bind: '127.0.0.1:9884' }, workers: 2, log: { bufferBytes: 2 }, warmUp: 1 } as unknown as LbConfig;
      const changes = restartOnlyChanges(a, b, 4);
      // Every key restartOnlyChanges() can name differs between a and b: a new key must be added to both.
      expect(changes.map((c) => c.key).sort()).toEqual([...RESTART_ONLY_KEYS].sort());
      return changes.map((c) => `${c.key} change needs a restart`);
    },
  },
  {
    file: 'src/telemetry/admin-server.ts',
    argument: '`${what} collection failed`',
    why: "sendRendered()'s `what`: the last argument of each of its calls in that file",
    messages: () => {
      const src = readFileSync(`${ROOT}src/telemetry/admin-server.ts`, 'utf8');
      const whats = scanCalls(src, 'src/telemetry/admin-server.ts', new Set(['sendRendered'])).calls.map((c) => c.message);
      expect(whats.length).toBeGreaterThan(0);
      expect(whats).not.toContain(null);
      return whats.map((w) => `${w} collection failed`);
    },
  },
  {
    file: 'src/failover/log.ts',
    argument: 'msg',
    why: "RateLimitedLog.warn() passes its caller's message on: those calls (dropLog.warn, sendErrors.warn) are scanned",
    messages: () => [],
  },
  {
    file: 'src/failover/log.ts',
    argument: 'msg',
    why: "RateLimitedLog.error() passes its caller's message on: those calls (dropLog.error) are scanned",
    messages: () => [],
  },
];

/**
 * Calls whose level is computed. failover/index.ts writes the failover thread's lines at the level that thread
 * chose (`this.log[m.level](m.obj, m.msg)`): they are scanned where the thread writes them (heartbeat.ts ...).
 */
const COMPUTED_LEVEL = [{ file: 'src/failover/index.ts', receiver: 'this.log' }];

interface Scan {
  /** message -> the levels it is logged at (of warn, error, fatal) -> where */
  literal: Map<string, Map<Level, string[]>>;
  computed: Call[];
  computedLevel: Array<{ file: string; line: number; receiver: string }>;
  unclassified: Call[];
}

function scanSources(): Scan {
  const scan: Scan = { literal: new Map(), computed: [], computedLevel: [], unclassified: [] };
  for (const file of sourceFiles()) {
    const src = readFileSync(`${ROOT}${file}`, 'utf8');
    const found = scanCalls(src, file, new Set(LEVELS));
    scan.computedLevel.push(...found.computedLevel);
    for (const call of found.calls) {
      if (!isLogger(call.receiver)) {
        if (!(file.startsWith('src/config/') && PROBLEM_SINKS.has(call.receiver))) scan.unclassified.push(call);
        continue;
      }
      if (call.message === null) {
        scan.computed.push(call);
        continue;
      }
      const levels = scan.literal.get(call.message) ?? new Map<Level, string[]>();
      const at = levels.get(call.method as Level) ?? [];
      at.push(`${file}:${call.line}`);
      levels.set(call.method as Level, at);
      scan.literal.set(call.message, levels);
    }
  }
  return scan;
}

// ── what the doc says ───────────────────────────────────────────────────────────────────────────────────────

/** Rows of the section's tables: `| level | \`msg\`[, \`msg\` ...] | ...`, every backticked text of the second cell. */
function documentedRows(): Array<{ level: string; messages: string[] }> {
  const doc = readFileSync(`${ROOT}docs/operations.md`, 'utf8');
  const lines = doc.split('\n');
  const from = lines.findIndex((l) => l === `## ${SECTION}`);
  expect(from, `docs/operations.md has a "## ${SECTION}" section`).toBeGreaterThanOrEqual(0);
  const to = lines.findIndex((l, i) => i > from && /^## /.test(l));
  const rows: Array<{ level: string; messages: string[] }> = [];
  for (const line of lines.slice(from + 1, to < 0 ? undefined : to)) {
    if (!line.startsWith('|') || /^\|\s*(level|-+)\s*\|/.test(line)) continue;
    const cells = line.split(/(?<!\\)\|/).map((c) => c.trim());
    rows.push({ level: cells[1]!, messages: [...cells[2]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!) });
  }
  return rows;
}

// ── the tests ───────────────────────────────────────────────────────────────────────────────────────────────

describe('log lines to alert on (docs/operations.md)', () => {
  it('the scanner reads multi-line calls, both quotes, templates, and skips comments and strings', () => {
    const src = [
      "// log.warn({}, 'in a comment')",
      '/* this.log.error({}, "in a block comment") */',
      "const s = 'log.warn({}, \"in a string\")';",
      'const re = /log\\.warn\\(\'/g;',
      'this.log.warn(',
      "  { a: [1, 2], b: `x${f({ c: '}' })}` },",
      "  'it\\'s multi-line',",
      ');',
      'app?.log.error({ err }, `template without substitution`);',
      'running.log.fatal({}, "double \\"quoted\\"");',
      'this.dropLog.warn(`drop:${r}`, { reason: r }, \'rate limited\');',
      'log.warn({}, `${key} computed`);',
      'r.error(slot, \'a config problem\');',
      'this.log[m.level](m.obj, m.msg);',
    ].join('\n');
    const { calls, computedLevel } = scanCalls(src, 'x.ts', new Set(LEVELS));
    expect(calls.map((c) => [c.line, c.receiver, c.method, c.message])).toEqual([
      [5, 'this.log', 'warn', "it's multi-line"],
      [9, 'app.log', 'error', 'template without substitution'],
      [10, 'running.log', 'fatal', 'double "quoted"'],
      [11, 'this.dropLog', 'warn', 'rate limited'],
      [12, 'log', 'warn', null],
      [13, 'r', 'error', 'a config problem'],
    ]);
    expect(calls[4]!.lastArgument).toBe('`${key} computed`');
    expect(calls[1]!.fieldKeys).toEqual(['err']);
    expect(objectKeys(lex("{ a, b: f({ c: 1 }), 'd': [x, y], ...e, [k]: 2 }").tokens)).toEqual(['a', 'b', 'd']);
    expect(computedLevel).toEqual([{ file: 'x.ts', line: 14, receiver: 'this.log' }]);
  });

  const scan = scanSources();

  it('finds the log calls (the scanner did not go blind)', () => {
    expect(scan.literal.size).toBeGreaterThan(40);
    expect(scan.literal.get('cannot start')?.get('fatal')).toEqual([expect.stringMatching(/^src\/run\.ts:\d+$/)]);
  });

  it("no log line's fields reuse pino's own names (a JSON line with two `pid` keys loses one: an audit, workers' pids)", () => {
    const own = new Set(['level', 'time', 'pid', 'hostname', 'msg']);
    const clashes: string[] = [];
    for (const file of sourceFiles()) {
      for (const call of scanCalls(readFileSync(`${ROOT}${file}`, 'utf8'), file, new Set([...LEVELS, 'info', 'debug', 'trace'])).calls) {
        if (!isLogger(call.receiver)) continue;
        for (const key of call.fieldKeys) if (own.has(key)) clashes.push(`${call.file}:${call.line} ${key}`);
      }
    }
    expect(clashes).toEqual([]);
  });

  it('every warn/error/fatal call is on a logger or a config problem sink', () => {
    expect(scan.unclassified.map((c) => `${c.file}:${c.line} ${c.receiver}.${c.method}(...)`)).toEqual([]);
  });

  it('every computed message or level is listed (and every listed one still exists)', () => {
    const found = scan.computed.map((c) => `${c.file} ${c.lastArgument}`).sort();
    expect(found).toEqual(COMPUTED.map((c) => `${c.file} ${c.argument}`).sort());
    expect(scan.computedLevel.map(({ file, receiver }) => ({ file, receiver }))).toEqual(COMPUTED_LEVEL);
  });

  it('every message is documented at its level, once', () => {
    const rows = documentedRows();
    const doc = new Map<string, string>();
    for (const row of rows) {
      expect(row.messages.length, `a row without a message: ${JSON.stringify(row)}`).toBeGreaterThan(0);
      for (const m of row.messages) {
        expect(doc.has(m), `documented twice: ${m}`).toBe(false);
        doc.set(m, row.level);
      }
    }
    const wanted = new Map<string, string>();
    // A message logged at two levels reads e.g. `error, warn` here and matches no row's level: pick one level.
    for (const [message, levels] of scan.literal) wanted.set(message, [...levels.keys()].sort().join(', '));
    for (const c of COMPUTED) {
      const level = scan.computed.find((x) => x.file === c.file && x.lastArgument === c.argument)?.method ?? '(not logged)';
      for (const m of c.messages()) wanted.set(m, level);
    }
    const missing = [...wanted].filter(([m]) => !doc.has(m)).map(([m, level]) => `${level} ${m} (${[...(scan.literal.get(m)?.values() ?? [])].flat().join(', ')})`);
    expect.soft(missing, 'logged in src/ but not in the doc section').toEqual([]);
    const stale = [...doc.keys()].filter((m) => !wanted.has(m));
    expect.soft(stale, 'in the doc section but no longer logged').toEqual([]);
    const wrongLevel = [...wanted].filter(([m, level]) => doc.has(m) && doc.get(m) !== level).map(([m, level]) => `${m}: src ${level}, doc ${doc.get(m)}`);
    expect.soft(wrongLevel).toEqual([]);
  });
});
