/**
 * Typed reading of a parsed YAML document with positions: every read either returns a value or records a
 * problem at the node that caused it (the key for unknown keys, the value for bad values, the mapping for
 * missing keys). Reads never throw, so one pass collects every problem of the file.
 */
import { isIPv6 } from 'node:net';
import { isAlias, isMap, isScalar, isSeq } from 'yaml';
import type { Document, ParsedNode, Scalar, YAMLMap, YAMLSeq } from 'yaml';
import type { ConfigProblem } from '../errors.js';
import { formatProblem } from '../errors.js';
import { elsewhereNote, foreignNote, offHint, suggestKey, valueHint } from './did-you-mean.js';
import { formatDuration, parseDuration } from './duration.js';
import { parseHostPortDetailed, type Parsed } from './net-syntax.js';
import type { HostPort } from './types.js';

export type Content = Scalar.Parsed | YAMLMap.Parsed | YAMLSeq.Parsed;

/** A value found in the document: its node (aliases resolved), where to point at it, and its key path. */
export interface Slot {
  node: Content | null;
  at: number;
  path: string;
  /** Its value was refused where it stands (a secret's value by an alias): read as nothing, with nothing more said. */
  refused?: true;
  /**
   * Reached through an alias (`*srv`), itself or a mapping or list above it: where that alias is written. Every
   * problem inside is said there, where this use of the anchored text is, not at the anchor (said once already).
   */
  viaAlias?: number;
}

function withAlias(slot: Slot, viaAlias: number | undefined): Slot {
  if (viaAlias !== undefined) slot.viaAlias = viaAlias;
  return slot;
}

export function joinPath(parent: string, key: string): string {
  return parent === '' ? key : `${parent}.${key}`;
}

/**
 * Offsets to 1-based line and column, counted from the text itself. yaml's LineCounter learns line starts from
 * its lexer, which in error recovery skips the line break inside a multi-line plain scalar: every problem after
 * it was reported one line early. YAML's line breaks are LF, CRLF and a lone CR.
 */
export class TextPositions {
  private readonly lineStarts: number[] = [0];

  constructor(text: string) {
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x0a || (c === 0x0d && text.charCodeAt(i + 1) !== 0x0a)) this.lineStarts.push(i + 1);
    }
  }

  linePos(offset: number): { line: number; col: number } {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, col: offset - this.lineStarts[lo]! + 1 };
  }
}

/** Problems and warnings with their offsets; sorted into file order on the way out. */
export class ProblemCollector {
  private readonly problems: Array<{ offset: number; problem: ConfigProblem }> = [];
  private readonly warnings: Array<{ offset: number; problem: ConfigProblem }> = [];

  constructor(
    readonly file: string,
    private readonly positions: TextPositions,
  ) {}

  private make(offset: number, path: string, message: string): ConfigProblem {
    const { line, col } = this.positions.linePos(offset);
    return { file: this.file, line, col, path: path === '' ? '(root)' : path, message };
  }

  error(offset: number, path: string, message: string): void {
    this.problems.push({ offset, problem: this.make(offset, path, message) });
  }

  warn(offset: number, path: string, message: string): void {
    this.warnings.push({ offset, problem: this.make(offset, path, message) });
  }

  /** `FILE:LINE:COL` of an offset, as problems are prefixed. */
  where(offset: number): string {
    const { line, col } = this.positions.linePos(offset);
    return `${this.file}:${line}:${col}`;
  }

  /** 1-based line of an offset, for "first on line N" in messages. */
  lineOf(offset: number): number {
    return this.positions.linePos(offset).line;
  }

  get errorCount(): number {
    return this.problems.length;
  }

  /** In file order; Array.prototype.sort is stable, so problems at one node keep the order they were found in. */
  sortedProblems(): ConfigProblem[] {
    return [...this.problems].sort((a, b) => a.offset - b.offset).map((p) => p.problem);
  }

  sortedWarnings(): string[] {
    return [...this.warnings].sort((a, b) => a.offset - b.offset).map((p) => formatProblem(p.problem));
  }
}

function isImplicitNull(node: Content): boolean {
  return isScalar(node) && node.value === null && node.source === '';
}

/**
 * Values never quoted back in a message (the terminal, `mqtt-lb check`'s output and a rejected reload's log line
 * would carry them): the admin token and the health check's MQTT password, at any level.
 */
export function isSecretPath(path: string): boolean {
  return path === 'admin.token' || path === 'password' || path.endsWith('.password');
}

/** The words YAML 1.1 read as booleans and YAML 1.2 (this parser) reads as strings: told apart in messages. */
export const YAML11_BOOLEAN_WORD = /^(yes|no|on|off|y|n)$/i;

/** What kind of value the operator wrote, without the value itself (secrets; a whole file that is not a config). */
export function describeKind(node: Content | null): string {
  if (node === null || isImplicitNull(node)) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  const v = node.value;
  if (v === null) return 'null';
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'boolean') return 'a boolean';
  return typeof v === 'number' || typeof v === 'bigint' ? 'a number' : 'a value of another type';
}

/** What the operator wrote, for "(got ...)" in messages. */
export function describe(node: Content | null): string {
  if (node === null || isImplicitNull(node)) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  const v = node.value;
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (v === null) return 'null';
  return node.source !== '' ? node.source : String(v);
}

export interface StringRule {
  /** Accept the empty string. */
  allowEmpty?: boolean;
  pattern?: RegExp;
  /** Says what the pattern allows, for the message. */
  rule?: string;
}

export interface NumberRule {
  min?: number;
  max?: number;
  /** `min` itself is not allowed (evictRate > 0). */
  minExclusive?: boolean;
  integer?: boolean;
}

const DUPLICATE_KEY = 'duplicate key: a key may appear only once in a mapping';
const SECRET_AS_KEY = 'a key that is also the value of a secret (`admin.token` or a password, by an anchor and an alias): not shown, and not allowed';

/** Node's timers hold at most 2^31-1 ms (about 596.5 h) and run a longer one after 1 ms: no duration is longer. */
export const MAX_DURATION_MS = 596 * 3600 * 1000;

export interface DurationRule {
  min?: number; // ms
  max?: number; // ms
  minExclusive?: boolean;
  /** The wire format carries this unit (advert interval: centiseconds). */
  multipleOf?: number;
  /** `0s` is allowed too, and means this (`none`, `never`): `min` then bounds the other values. */
  zeroMeans?: string;
}

/** What `ms` breaks of `rule` (`must be ...`), or null when it fits. */
function durationRuleProblem(ms: number, rule: DurationRule): string | null {
  const { min, zeroMeans } = rule;
  if (ms === 0 && zeroMeans !== undefined) return null;
  const max = Math.min(rule.max ?? MAX_DURATION_MS, MAX_DURATION_MS);
  const belowMin = min !== undefined && (rule.minExclusive === true ? ms <= min : ms < min);
  if (belowMin || ms > max) {
    const lo = min === undefined ? '' : rule.minExclusive === true ? `more than ${formatDuration(min)}` : `at least ${formatDuration(min)}`;
    const hi = rule.max !== undefined || ms > max ? `at most ${formatDuration(max)}` : '';
    const range = [lo, hi].filter((s) => s !== '').join(' and ');
    // The whole rule, whichever end was crossed: `600h` told only of the upper bound hid that 0s is allowed.
    return `must be ${zeroMeans === undefined ? range : `0s (${zeroMeans}) or ${range}`}`;
  }
  if (rule.multipleOf !== undefined && ms % rule.multipleOf !== 0) return `must be a multiple of ${formatDuration(rule.multipleOf)}`;
  return null;
}

/**
 * A bare number where a duration goes: add a unit, offering only the readings (ms as HAProxy, s as keepalived) the key
 * allows (an audit: `50` was offered `50ms` where at least 100ms is allowed); when neither fits, the rule itself.
 */
function bareNumberProblem(value: number, rule: DurationRule, secondsFirst: boolean): string {
  // Each reading as the user would write it (`1.005s` is 1005 ms, which 1.005 * 1000 is not).
  const readings = [
    { parsed: parseDuration(`${value}ms`), text: `\`${value}ms\` (what HAProxy reads in a bare number)` },
    { parsed: parseDuration(`${value}s`), text: `\`${value}s\` (as keepalived reads one)` },
  ];
  if (secondsFirst) readings.reverse();
  const fitting = readings.filter((r) => r.parsed.ok && durationRuleProblem(r.parsed.ms, rule) === null);
  if (fitting.length === 1) return `a bare number is not a duration: add a unit, e.g. ${fitting[0]!.text}`;
  if (fitting.length === 0) {
    // Either reading's problem states the whole rule (durationRuleProblem); one too large to read, as past any maximum.
    const problem = readings.map((r) => durationRuleProblem(r.parsed.ok ? r.parsed.ms : value > 0 ? Number.MAX_SAFE_INTEGER : -1, rule)).find((p) => p !== null);
    return `a bare number is not a duration: add a unit (ms, s, m, h)${problem === undefined ? '' : `; it ${problem}`}`;
  }
  const parsed = parseDuration(value, secondsFirst);
  return parsed.ok ? 'a bare number is not a duration: add a unit (ms, s, m, h)' : parsed.error;
}

export class ConfigReader {
  /** The value nodes of the secrets (isSecretPath), found before validation: the same node elsewhere (an alias) is one too. */
  private readonly secretNodes: Set<Content>;

  constructor(
    private readonly doc: Document.Parsed,
    readonly out: ProblemCollector,
  ) {
    this.secretNodes = this.findSecretNodes();
  }

  private findSecretNodes(): Set<Content> {
    const found = new Set<Content>();
    const child = (node: Content | null, key: string): Content | null => {
      if (!isMap(node)) return null;
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === key);
      return pair === undefined ? null : this.resolve(pair.value as ParsedNode | null);
    };
    const root = this.resolve(this.doc.contents);
    const token = child(child(root, 'admin'), 'token');
    if (token !== null) found.add(token);
    const pools = child(root, 'pools');
    if (isMap(pools)) {
      for (const pair of pools.items) {
        const password = child(child(child(this.resolve(pair.value as ParsedNode | null), 'health'), 'mqtt'), 'password');
        if (password !== null) found.add(password);
      }
    }
    return found;
  }

  /** The document's top-level value. */
  root(): Slot {
    const contents = this.doc.contents;
    return { node: this.resolve(contents), at: contents?.range[0] ?? 0, path: '' };
  }

  private resolve(node: ParsedNode | null): Content | null {
    if (node === null) return null;
    if (!isAlias(node)) return node;
    // Anchors are defined before use, so resolution cannot loop; an undefined alias is a yaml error already.
    const target = node.resolve(this.doc);
    return (target as Content | undefined) ?? null;
  }

  /** A node that is also a secret's value (an anchor on it, the alias as the secret, or the other way round). */
  isSecretNode(node: unknown): boolean {
    return this.secretNodes.has(node as Content);
  }

  /**
   * Where a value is: the value itself, or its key when nothing was written after the colon. A secret's value where
   * no secret belongs (by an anchor and an alias) is a problem there, and read as nothing: a message about it would
   * quote it.
   */
  slotOf(value: ParsedNode | null, keyAt: number, path: string, viaAlias?: number): Slot {
    const node = this.resolve(value);
    const alias = isAlias(value) ? value.range[0] : viaAlias;
    if (node === null || isImplicitNull(node)) return withAlias({ node, at: alias ?? keyAt, path }, alias);
    const at = alias ?? node.range[0];
    if (this.secretNodes.has(node) && !isSecretPath(path)) {
      this.out.error(at, path, 'is the value of a secret (`admin.token` or a password, by an anchor and an alias): a secret cannot be used for another key');
      return withAlias({ node: null, at, path, refused: true }, alias);
    }
    return withAlias({ node, at, path }, alias);
  }

  /** A problem at `slot`; none for a slot whose value was refused (that has been said). */
  error(slot: Slot, message: string): void {
    if (slot.refused === true) return;
    this.out.error(slot.at, slot.path, message);
  }

  warn(slot: Slot, message: string): void {
    if (slot.refused === true) return;
    this.out.warn(slot.at, slot.path, message);
  }

  /**
   * `key`, written at `slot`, must not repeat among those `seen` so far (names in a list, router ids, VIPs): a repeat
   * is the problem `duplicate WHAT (first on line N)`.
   */
  unique<K>(seen: Map<K, Slot>, key: K, slot: Slot, what: string): void {
    const first = seen.get(key);
    if (first !== undefined) this.error(slot, `duplicate ${what} (first on line ${this.out.lineOf(first.at)})`);
    else seen.set(key, slot);
  }

  /** Whether its value was refused where it stands (slotOf): then it reads as null, and other checks say nothing of it. */
  wasRefused(slot: Slot): boolean {
    return slot.refused === true;
  }

  isNull(slot: Slot): boolean {
    return slot.node === null || (isScalar(slot.node) && slot.node.value === null);
  }

  private typeError(slot: Slot, expected: string): void {
    // The document itself not a mapping: most often a file given to --config that is no config at all (a key, a
    // certificate, /etc/shadow), whose first characters must not be printed. A secret: neither.
    if (slot.path === '' || isSecretPath(slot.path)) {
      const quote = isScalar(slot.node) && typeof slot.node.value !== 'string' && slot.node.value !== null && expected.includes('string');
      const hint = slot.path === '' ? ': is this an mqtt-lb config file?' : quote ? '; quote it' : '';
      this.error(slot, `must be ${expected} (got ${describeKind(slot.node)}${hint})`);
      return;
    }
    const got = describe(slot.node);
    let hint = '';
    if (isScalar(slot.node) && typeof slot.node.value !== 'string' && slot.node.value !== null && expected.includes('string')) {
      hint = `; quote it: "${slot.node.source}"`;
    }
    this.error(slot, `must be ${expected} (got ${got}${hint})`);
  }

  /**
   * A mapping none of whose keys is one of `allowed` or near one (no did-you-mean, no note): another program's file
   * given to --config (/etc/shadow reads as a mapping of `root:*:...:` keys). Its keys are not listed back: `check`
   * may run with more rights than its caller.
   */
  foreignMapping(slot: Slot, allowed: readonly string[]): boolean {
    if (!isMap(slot.node) || slot.node.items.length === 0) return false;
    for (const pair of slot.node.items) {
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      if (typeof key !== 'string') continue;
      if (allowed.includes(key) || suggestKey(key, allowed) !== null || foreignNote(key, allowed, slot.path) !== null || elsewhereNote(key, allowed) !== null) return false;
    }
    return true;
  }

  /** A mapping with a fixed set of keys; unknown keys are problems at the key. */
  mapping(slot: Slot, allowed: readonly string[]): MapReader | undefined {
    if (!isMap(slot.node)) {
      this.typeError(slot, 'a mapping');
      return undefined;
    }
    return new MapReader(this, slot, allowed);
  }

  /** A mapping whose keys are names chosen by the operator (pools). */
  namedEntries(slot: Slot): Array<{ name: string; keyAt: number; value: Slot }> | undefined {
    if (!isMap(slot.node)) {
      this.typeError(slot, 'a mapping of names');
      return undefined;
    }
    const entries: Array<{ name: string; keyAt: number; value: Slot }> = [];
    const seen = new Set<string>();
    for (const pair of slot.node.items) {
      const key = this.resolve(pair.key);
      const keyAt = slot.viaAlias ?? pair.key.range[0];
      if (this.secretNodes.has(key as Content)) {
        this.out.error(keyAt, slot.path, SECRET_AS_KEY);
        continue;
      }
      if (!isScalar(key) || (typeof key.value !== 'string' && typeof key.value !== 'number')) {
        this.out.error(keyAt, slot.path, 'names must be plain strings');
        continue;
      }
      // As written: YAML reads `007` as the number 7 and `1e400` as Infinity, which are not the names meant.
      const name = typeof key.value === 'string' ? key.value : (key.source ?? String(key.value));
      if (seen.has(name)) {
        this.out.error(keyAt, joinPath(slot.path, name), DUPLICATE_KEY);
        continue;
      }
      seen.add(name);
      entries.push({ name, keyAt, value: this.slotOf(pair.value, keyAt, joinPath(slot.path, name), slot.viaAlias) });
    }
    return entries;
  }

  list(slot: Slot): Slot[] | undefined {
    if (!isSeq(slot.node)) {
      this.typeError(slot, 'a list');
      return undefined;
    }
    return slot.node.items.map((item, i) => this.slotOf(item, slot.viaAlias ?? item.range[0], `${slot.path}[${i}]`, slot.viaAlias));
  }

  string(slot: Slot, rule: StringRule = {}): string | undefined {
    if (!isScalar(slot.node) || typeof slot.node.value !== 'string') {
      this.typeError(slot, 'a string');
      return undefined;
    }
    const v = slot.node.value;
    if (v === '' && rule.allowEmpty !== true) {
      this.error(slot, 'must not be empty');
      return undefined;
    }
    if (rule.pattern !== undefined && !rule.pattern.test(v)) {
      this.error(slot, `${describe(slot.node)} is not allowed here: ${rule.rule ?? `must match ${rule.pattern}`}`);
      return undefined;
    }
    return v;
  }

  bool(slot: Slot): boolean | undefined {
    if (isScalar(slot.node) && typeof slot.node.value === 'boolean') return slot.node.value;
    const v = isScalar(slot.node) ? slot.node.value : undefined;
    if (typeof v === 'string' && YAML11_BOOLEAN_WORD.test(v)) {
      this.error(slot, `must be true or false (got ${describe(slot.node)}: YAML 1.2 reads yes/no/on/off as strings)`);
      return undefined;
    }
    this.typeError(slot, 'true or false');
    return undefined;
  }

  number(slot: Slot, rule: NumberRule): number | undefined {
    const v = isScalar(slot.node) ? slot.node.value : undefined;
    if (rule.integer === true && typeof v === 'number') {
      // YAML reads `1.0` and `1e3` as the numbers 1 and 1000: whole, but written as fractions.
      if (Number.isInteger(v) && writtenAsFraction(slot.node)) {
        this.error(slot, `must be ${describeNumberRule(rule)}, written without a fraction or exponent (got ${describe(slot.node)})`);
        return undefined;
      }
      if (Number.isInteger(v) && !Number.isSafeInteger(v)) {
        this.error(slot, `must be ${describeNumberRule({ ...rule, max: rule.max ?? Number.MAX_SAFE_INTEGER })} (got ${describe(slot.node)})`);
        return undefined;
      }
    }
    const ok =
      typeof v === 'number' &&
      Number.isFinite(v) &&
      (rule.integer !== true || Number.isSafeInteger(v)) &&
      (rule.min === undefined || (rule.minExclusive === true ? v > rule.min : v >= rule.min)) &&
      (rule.max === undefined || v <= rule.max);
    if (ok) return v;
    this.typeError(slot, describeNumberRule(rule));
    return undefined;
  }

  int(slot: Slot, min: number, max?: number): number | undefined {
    return this.number(slot, max === undefined ? { integer: true, min } : { integer: true, min, max });
  }

  oneOf<T extends string>(slot: Slot, values: readonly T[]): T | undefined {
    const v = isScalar(slot.node) ? slot.node.value : undefined;
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
    const allowed = values.map((x) => `\`${x}\``).join(', ');
    const hint = (typeof v === 'string' ? valueHint(v, values) : '') || offHint(v, values);
    this.error(slot, `must be one of ${allowed} (got ${describe(slot.node)}${hint})`);
    return undefined;
  }

  duration(slot: Slot, rule: DurationRule = {}): number | undefined {
    const v = isScalar(slot.node) ? slot.node.value : undefined;
    const secondsFirst = slot.path.startsWith('failover.');
    if (typeof v === 'number') {
      this.error(slot, bareNumberProblem(v, rule, secondsFirst));
      return undefined;
    }
    const parsed = parseDuration(v, secondsFirst);
    if (!parsed.ok) {
      this.error(slot, parsed.error);
      return undefined;
    }
    const problem = durationRuleProblem(parsed.ms, rule);
    if (problem !== null) {
      this.error(slot, `${problem} (got ${describe(slot.node)})`);
      return undefined;
    }
    return parsed.ms;
  }

  /** A string read by one of net-syntax.ts's parsers: its value, or undefined once its problem is recorded. */
  parsed<T>(slot: Slot, parse: (text: string) => Parsed<T>): T | undefined {
    const text = this.string(slot);
    if (text === undefined) return undefined;
    const r = parse(text);
    if (!r.ok) {
      this.error(slot, r.error);
      return undefined;
    }
    return r.value;
  }

  hostPort(slot: Slot): { text: string; address: HostPort } | undefined {
    // A port alone (HAProxy's `bind :1883` habit), which YAML reads as a number: what is missing is the host, which
    // "must be a string; quote it" would only say after a second round.
    const node = slot.node;
    if (isScalar(node) && typeof node.value === 'number' && Number.isInteger(node.value) && node.value > 0) {
      const r = parseHostPortDetailed(String(node.value));
      if (!r.ok) {
        this.error(slot, r.error);
        return undefined;
      }
    }
    // `bind: [::1]` unquoted: a YAML list of one IPv6 address (an IPv6 audit got "must be a string (got a list)").
    if (isSeq(node) && node.items.length === 1 && isScalar(node.items[0]) && typeof node.items[0].value === 'string' && isIPv6(node.items[0].value)) {
      const port = slot.path === 'admin.bind' ? 9883 : 1883;
      this.error(slot, `an IPv6 host:port must be quoted, with a port: \`"[${node.items[0].value}]:${port}"\` (unquoted, \`[\` starts a YAML list)`);
      return undefined;
    }
    return this.parsed(slot, (text) => {
      const r = parseHostPortDetailed(text);
      return r.ok ? { ok: true, value: { text, address: r.value } } : r;
    });
  }
}

/** A whole number written as `1.0` or `1e3` (YAML reads them as numbers; where an integer is asked, they are not). */
export function writtenAsFraction(node: unknown): boolean {
  const source = isScalar(node) ? (node as { source?: unknown }).source : undefined;
  return typeof source === 'string' && /[.eE]/.test(source) && !/^[-+]?0x/i.test(source);
}

function describeNumberRule(rule: NumberRule): string {
  const noun = rule.integer === true ? 'an integer' : 'a number';
  const { min, max } = rule;
  if (min !== undefined && max !== undefined) return `${noun} between ${min} and ${max}`;
  if (min !== undefined) return rule.minExclusive === true ? `${noun} greater than ${min}` : `${noun} of at least ${min}`;
  if (max !== undefined) return `${noun} of at most ${max}`;
  return noun;
}

/**
 * One mapping with a fixed key set. Getters with a default return it when the key is absent or its value is
 * invalid (the problem is recorded, and the config is discarded anyway): that keeps validation going.
 */
export class MapReader {
  private readonly entries = new Map<string, { keyAt: number; value: Slot }>();

  constructor(
    readonly r: ConfigReader,
    readonly slot: Slot,
    allowed: readonly string[],
  ) {
    const node = slot.node as YAMLMap.Parsed;
    for (const pair of node.items) {
      const keyAt = slot.viaAlias ?? pair.key.range[0];
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      if (r.isSecretNode(pair.key)) {
        r.out.error(keyAt, slot.path, SECRET_AS_KEY);
        continue;
      }
      if (typeof key !== 'string') {
        r.out.error(keyAt, slot.path, `keys must be strings (got ${describe(pair.key as Content)})`);
        continue;
      }
      const path = joinPath(slot.path, key);
      if (key === '<<') {
        r.out.error(keyAt, path, 'merge keys (`<<`) are not supported (YAML 1.2): repeat the keys, or use an alias (`*name`) for a whole value');
        continue;
      }
      if (!allowed.includes(key)) {
        const note = foreignNote(key, allowed, slot.path);
        const guess = note === null ? suggestKey(key, allowed) : null;
        // One of our own keys in the wrong mapping (`refuseWith` in a pool): where it belongs, with any near key here.
        const elsewhere = note === null ? elsewhereNote(key, allowed) : null;
        const hint =
          note !== null
            ? ` (${note})`
            : guess !== null
              ? ` (did you mean \`${guess}\`?${elsewhere !== null ? ` ${elsewhere}` : ''})`
              : elsewhere !== null
                ? ` (${elsewhere}; allowed here: ${allowed.join(', ')})`
                : `; allowed here: ${allowed.join(', ')}`;
        r.out.error(keyAt, path, `unknown key \`${key}\`${hint}`);
        continue;
      }
      if (this.entries.has(key)) {
        r.out.error(keyAt, path, DUPLICATE_KEY);
        continue;
      }
      this.entries.set(key, { keyAt, value: r.slotOf(pair.value, keyAt, path, slot.viaAlias) });
    }
  }

  get path(): string {
    return this.slot.path;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The slot of `key`, or undefined when absent. */
  get(key: string): Slot | undefined {
    return this.entries.get(key)?.value;
  }

  keyAt(key: string): number | undefined {
    return this.entries.get(key)?.keyAt;
  }

  /** The slot of a key that has no default; a problem at this mapping when it is absent or empty. */
  required(key: string, what?: string): Slot | undefined {
    const slot = this.get(key);
    if (slot === undefined) {
      this.r.out.error(this.slot.at, joinPath(this.path, key), `missing required key \`${key}\`${what !== undefined ? ` (${what})` : ''}`);
      return undefined;
    }
    if (this.r.isNull(slot)) {
      this.r.error(slot, `must not be empty${what !== undefined ? ` (${what})` : ''}`);
      return undefined;
    }
    return slot;
  }

  /** The value of an optional sub-mapping; null (written or not) means "all defaults". */
  section(key: string, allowed: readonly string[]): MapReader | undefined {
    const slot = this.get(key);
    if (slot === undefined || this.r.isNull(slot)) return undefined;
    return this.r.mapping(slot, allowed);
  }

  str(key: string, def: string, rule?: StringRule): string {
    const slot = this.get(key);
    return slot === undefined ? def : (this.r.string(slot, rule) ?? def);
  }

  nullableStr(key: string, rule?: StringRule): string | null {
    const slot = this.get(key);
    if (slot === undefined || this.r.isNull(slot)) return null;
    return this.r.string(slot, rule) ?? null;
  }

  bool(key: string, def: boolean): boolean {
    const slot = this.get(key);
    return slot === undefined ? def : (this.r.bool(slot) ?? def);
  }

  int(key: string, def: number, min: number, max?: number): number {
    const slot = this.get(key);
    return slot === undefined ? def : (this.r.int(slot, min, max) ?? def);
  }

  num(key: string, def: number, rule: NumberRule): number {
    const slot = this.get(key);
    return slot === undefined ? def : (this.r.number(slot, rule) ?? def);
  }

  oneOf<T extends string>(key: string, def: NoInfer<T>, values: readonly T[]): T {
    const slot = this.get(key);
    return slot === undefined ? def : (this.r.oneOf(slot, values) ?? def);
  }

  duration(key: string, def: number, rule?: DurationRule): number {
    const slot = this.get(key);
    return slot === undefined ? def : (this.r.duration(slot, rule) ?? def);
  }
}
