/**
 * lb.yaml -> LbConfig. The one place that knows YAML: parse with positions, validate every key
 * (validate.ts), optionally check the files the config names, and report every problem at once as
 * `FILE:LINE:COL key.path: message`, in file order.
 */
import { accessSync, closeSync, constants, openSync, readFileSync, readlinkSync, readSync, statSync } from 'node:fs';
import { openRegularFile } from '../regular-file.js';
import { isUtf8 } from 'node:buffer';
import { networkInterfaces } from 'node:os';
import { isIPv4 } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { tlsCaProblem, tlsCertificateWarning, tlsPairProblem, type TlsMaterialProblem } from './tls-material.js';
import { keyProblem } from '../failover/key.js';
import { vipAddresses } from '../failover/ipv4.js';
import { adminStateTarget, readAdminStateFile } from '../balancer/admin-state-file.js';
import { CST, Parser, isMap, isSeq, parseDocument, visit } from 'yaml';
import type { Document, ParsedNode } from 'yaml';
import type { ConfigProblem } from '../errors.js';
import { ConfigError, ConfigFileError, ErrorCodes, MqttLbError } from '../errors.js';
import type { LbConfig } from './types.js';
import type { FileRef, HostRef } from './validate-context.js';
import { validateDocument } from './validate.js';
import { ConfigReader, isSecretPath, joinPath, ProblemCollector, TextPositions } from './yaml-reader.js';
import { scriptInsecurity } from './script-security.js';

export { parseHostPort } from './net-syntax.js';

export interface ParseOutcome {
  /** null when there is any problem. */
  config: LbConfig | null;
  problems: ConfigProblem[];
  /** Formatted like problems (`FILE:LINE:COL path: message`); they never make the config invalid. */
  warnings: string[];
  /** `FILE:LINE:COL` of the value at a config path (`listeners[0].bind`), for what is found after parsing; null if not written. */
  locate?: (path: string) => string | null;
}

export interface ParseOptions {
  /**
   * Check what only this host can tell (default false: parsing stays pure): that the files named by the config
   * exist and are usable, and that no failover peer is one of this host's own addresses.
   */
  checkFiles?: boolean;
  /** This host's addresses by interface, for that check (default: os.networkInterfaces()). */
  hostAddresses?: ReadonlyMap<string, readonly string[]>;
  /** Whether a program is found on PATH, for the failover's `ip` and `arping` (default: a search of PATH). */
  onPath?: (program: string) => boolean;
  /** The file's bytes were not UTF-8 (readConfigFile): the offset, in the decoded text, of the first bad byte. */
  notUtf8At?: number | null;
}

/** A config file's text, and where its bytes first stopped being UTF-8 (each bad byte became U+FFFD). */
export interface ConfigText {
  text: string;
  notUtf8At: number | null;
}

/**
 * Parses and validates lb.yaml text. `file` is used in messages as given, and resolved (against the working
 * directory) for LbConfig.file and as the base of relative paths in the config.
 */
export function parseConfig(text: string, file: string, opts: ParseOptions = {}): ParseOutcome {
  // A byte-order mark is no character of line 1: columns count from after it.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  // Duplicate keys are found by our readers (yaml-reader.ts), in linear time: yaml's own check (uniqueKeys)
  // compares every pair with every other (50,000 keys: 14 s, during which a SIGHUP reload blocks the process).
  const out = new ProblemCollector(file, new TextPositions(text));
  /** What a config that cannot be validated any further gives: its problems so far. */
  const failed = (): ParseOutcome => ({ config: null, problems: out.sortedProblems(), warnings: [] });
  // Decoding replaced the bad bytes (U+FFFD): a password or an address would silently be another one. The key path
  // near the byte would quote another program's file (a binary, /etc/shadow): not shown for one.
  if (opts.notUtf8At !== undefined && opts.notUtf8At !== null) {
    if (!mentionsOurKeys(text)) {
      out.error(0, '(root)', NOT_OUR_FILE);
      return failed();
    }
    out.error(opts.notUtf8At, keyPathNear(text, opts.notUtf8At), 'not UTF-8 text here (a byte that is not UTF-8): save the file as UTF-8');
    return failed();
  }
  try {
    return parseText(text, file, opts, out, failed);
  } catch (err) {
    // The YAML library, its syntax tree and our readers recurse per nesting level: a file nested thousands of
    // levels deep (generated, or hostile) overflows the stack. No lb.yaml nests beyond a dozen levels.
    if (!(err instanceof RangeError) || !err.message.includes('Maximum call stack size exceeded')) throw err;
    return tooDeep(text, file);
  }
}

const NOT_OUR_FILE = 'no key of lb.yaml (listeners, pools, limits, admin, log, workers, warmUp, failover) anywhere: is this an mqtt-lb config file?';
const YAML_TAG = 'a YAML tag (`!...`), which lb.yaml does not use: quote a value that starts with `!`';
/** `key`: the secret's own key (`token`, `password`), so the example is one the reader can copy (an audit: `token`). */
function secretNotYaml(key: string): string {
  return `this secret cannot be read as a YAML value (it is not shown): quote it, e.g. ${key}: "..."`;
}

/** Whether the text has one of lb.yaml's top-level keys anywhere: an lb.yaml, however broken, has one. */
function mentionsOurKeys(text: string): boolean {
  return /(^|[\s{,])["']?(listeners|pools|limits|admin|log|workers|warmUp|failover)["']?[ \t]*:/m.test(text);
}

/** Whether a `token:` or `password:` key comes before `offset` on its line: a problem there is with a secret's value. */
function onSecretLine(text: string, offset: number): boolean {
  return secretKeyOnLine(text, offset) !== null;
}

/** The `token` or `password` key before `offset` on its line, or null. */
function secretKeyOnLine(text: string, offset: number): string | null {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1;
  return /(?:^|[\s{,])["']?(token|password)["']?[ \t]*:/.exec(text.slice(lineStart, offset + 1))?.[1] ?? null;
}

/** The message for a secret's value at `offset` (on a secret's line, or at a secret's `path`). */
function secretNotYamlAt(text: string, offset: number, path: string): string {
  return secretNotYaml(secretKeyOnLine(text, offset) ?? cutAtSecret(path).split('.').pop()!);
}

/** A key path cut after its secret (`...mqtt.password.Passw0rd`, a value read as a key, is `...mqtt.password`). */
function cutAtSecret(path: string): string {
  const parts = path.split('.');
  for (let i = 0; i < parts.length; i++) {
    if (isSecretPath(parts.slice(0, i + 1).join('.'))) return parts.slice(0, i + 1).join('.');
  }
  return path;
}

/** Where an unquoted `[v6]:port` opens on the line of a syntax error, before the error's column; else -1. */
function unquotedIpv6At(text: string, offset: number): number {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1;
  const lineEnd = text.indexOf('\n', offset);
  const m = /(^|[\s:,{-])\[[0-9A-Fa-f.%]*:[0-9A-Fa-f:.%]*\]:\d/.exec(text.slice(lineStart, lineEnd < 0 ? text.length : lineEnd));
  if (m === null) return -1;
  const at = lineStart + m.index + m[1]!.length;
  return at <= offset ? at : -1;
}

const TOO_DEEP = 'nested too deeply (thousands of levels of `[`, `{` or indentation): no mqtt-lb config nests beyond a dozen';

function tooDeep(text: string, file: string): ParseOutcome {
  const out = new ProblemCollector(file, new TextPositions(text));
  out.error(deepestOffset(text), '(root)', TOO_DEEP);
  return { config: null, problems: out.sortedProblems(), warnings: [] };
}

/** Where the text nests deepest: the most open brackets (quotes not told apart), else the most indented line. */
function deepestOffset(text: string): number {
  let depth = 0;
  let best = 0;
  let at = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth > best) [best, at] = [depth, i];
    } else if ((c === 0x5d || c === 0x7d) && depth > 0) depth--;
  }
  if (best > 1) return at;
  let indent = -1;
  for (let i = 0, lineStart = 0; i <= text.length; i++) {
    if (i < text.length && text.charCodeAt(i) === 0x20) continue;
    if (i - lineStart > indent) [indent, at] = [i - lineStart, i];
    const next = text.indexOf('\n', i);
    if (next < 0) break;
    i = next;
    lineStart = next + 1;
  }
  return at;
}

/** The plain value at `offset` when it is one token ending with `:` at the end of its line (`127.0.0.1:`), else null. */
function endsWithColon(text: string, offset: number): string | null {
  const lineEnd = text.indexOf('\n', offset);
  const rest = text.slice(offset, lineEnd < 0 ? text.length : lineEnd).replace(/\s*(#.*)?\r?$/, '');
  return /^[^\s#'"][^\s]*:$/.test(rest) ? rest : null;
}

/** Where the tag of the node starting at `valueAt` begins: the token before it (`!!seq` may end the line above). */
function tagOffset(text: string, valueAt: number): number {
  let end = valueAt;
  while (end > 0 && /\s/.test(text[end - 1]!)) end--;
  let start = end;
  while (start > 0 && !/\s/.test(text[start - 1]!)) start--;
  return start < end && text[start] === '!' ? start : valueAt;
}

function parseText(text: string, file: string, opts: ParseOptions, out: ProblemCollector, failed: () => ParseOutcome): ParseOutcome {
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false });

  // With a syntax error the tree is a guess: validating it would mostly report consequences of the error, and
  // so would the library's later errors (one unclosed `[` gave 2,176 lines). The first error only, and an
  // unclosed quote or bracket where it opens (the library reports it where the file ends).
  if (doc.errors.length > 0) {
    // The library catches its own stack overflows and reports them as errors.
    if (doc.errors.some((e) => e.message.includes('Maximum call stack size exceeded'))) return tooDeep(text, file);
    // Classic Mac line endings: YAML breaks lines at LF (a lone CR is no line break to it), so the whole file
    // reads as one line and the library's message says nothing useful.
    const loneCr = /\r(?!\n)/.exec(text);
    if (loneCr !== null) {
      out.error(loneCr.index, '(root)', 'a line ends with a lone CR (classic Mac line endings): save the file with LF (or CRLF) line endings');
      return failed();
    }
    // Another program's file given to --config (/etc/shadow, a PEM key): the messages below would quote its text, and
    // `check` may run with more rights than its caller. (A file YAML reads is judged by its keys: validate.ts.)
    if (!mentionsOurKeys(text)) {
      out.error(0, '(root)', NOT_OUR_FILE);
      return failed();
    }
    const opening = unclosedOpening(text);
    if (opening !== null) {
      out.error(opening.offset, syntaxPath(doc, opening.offset), opening.message);
      return failed();
    }
    const e = doc.errors.reduce((a, b) => (b.pos[0] < a.pos[0] ? b : a));
    const ipv6At = unquotedIpv6At(text, e.pos[0]);
    const slip = keyWithoutSpace(text, e);
    if (onSecretLine(text, e.pos[0])) {
      // A password starting with a YAML indicator (`|`, `>`, `*`, `!`, `@`...): the message would quote it.
      out.error(e.pos[0], syntaxPath(doc, e.pos[0]), secretNotYamlAt(text, e.pos[0], ''));
    } else if (e.code === 'MULTIPLE_DOCS') {
      // The library's advice (parseAllDocuments) is for programmers; the position is where the second begins.
      out.error(e.pos[0], '(root)', 'the file holds more than one YAML document (a `---` or `...` line): keep one');
    } else if (ipv6At >= 0) {
      // `bind: [::]:1883`: the `[` opens a YAML list, and the library's message says nothing of that. The value as
      // written, quoted (a re-audit: `[::1]:9883` was told to write `"[::]:1883"`, the wildcard and another port).
      const written = /^\[[^\]]*\]:\d+/.exec(text.slice(ipv6At))![0];
      out.error(ipv6At, syntaxPath(doc, ipv6At), `an IPv6 host:port must be quoted: \`"${written}"\` (unquoted, \`[\` starts a YAML list)`);
    } else if (slip !== null) {
      // `address:10.0.0.11:1883`: YAML reads the whole as one plain scalar, a key without a value.
      const k = slip;
      const whole = syntaxPath(doc, k.at);
      const path = whole.endsWith(`${k.key}:${k.rest}`) ? whole.slice(0, whole.length - k.rest.length - 1) : whole === '(root)' ? k.key : `${whole}.${k.key}`;
      out.error(k.at, path, `\`${k.key}:${k.rest}\`: a key needs a space after its \`:\` (\`${k.key}: ${k.rest}\`)`);
    } else if (e.code === 'BAD_SCALAR_START') {
      // `level: @info`, a value in backquotes: YAML reserves `@` and `` ` `` at the start of a plain value.
      const ch = text[e.pos[0]] ?? '';
      const message =
        ch === '`'
          ? 'a value cannot start with a backquote in YAML: use double quotes, e.g. `"info"`'
          : `a value cannot start with \`${ch}\` in YAML: quote it, e.g. \`"${ch}..."\``;
      out.error(e.pos[0], syntaxPath(doc, e.pos[0]), message);
    } else if (e.code === 'BLOCK_AS_IMPLICIT_KEY' && e.message.startsWith('Nested mappings are not allowed in compact mappings') && endsWithColon(text, e.pos[0]) !== null) {
      // `bind: 127.0.0.1:`, a port left out: YAML reads the value as a key of a mapping nested in the line.
      const token = endsWithColon(text, e.pos[0])!;
      const whole = syntaxPath(doc, e.pos[0]);
      const bare = token.slice(0, -1);
      const path = whole.endsWith(`.${bare}`) ? whole.slice(0, whole.length - bare.length - 1) : whole;
      out.error(e.pos[0], path, `\`${token}\` ends with \`:\`, which YAML reads as a key: a host:port without its port? Write it whole (\`${bare}:1883\`), or quote the value`);
    } else if (e.code === 'BLOCK_AS_IMPLICIT_KEY' && e.message.startsWith('A block sequence may not be used as an implicit map key')) {
      // A `- ` item indented under the last key of the item above it: the library points at column 1.
      out.error(contentLineAt(text, e.pos[0]).at, syntaxPath(doc, e.pos[0]), 'a list item (`- `) indented deeper than the items of its list: start it at the column of their `- `');
    } else {
      const path = syntaxPath(doc, e.pos[0]);
      const indentation = indentationProblem(text, e, (offset) => syntaxPath(doc, offset));
      const message = e.code === 'DUPLICATE_KEY' ? 'duplicate key: a key may appear only once in a mapping' : e.code === 'MULTILINE_IMPLICIT_KEY' ? 'a key without `:` after it, or a key over several lines' : e.message;
      out.error(indentation?.at ?? e.pos[0], indentation?.path ?? path, indentation?.message ?? message);
    }
    return failed();
  }
  // yaml resolves aliases lazily and reports a dangling one only on toJS(), which we never call.
  visit(doc, {
    Alias(_key, alias) {
      if (alias.resolve(doc) !== undefined) return;
      const at = alias.range?.[0] ?? 0;
      const path = pathAtOffset(doc, at);
      if (isSecretPath(path) || onSecretLine(text, at)) out.error(at, cutAtSecret(path), secretNotYamlAt(text, at, path));
      else out.error(at, path, `unknown alias \`*${alias.source}\` (no anchor \`&${alias.source}\` before it)`);
    },
  });
  // A `%YAML 1.1` directive would bring back YAML 1.1's values (`yes` a boolean, `0x10` a number): the docs promise 1.2.
  if (doc.directives.yaml.explicit && doc.directives.yaml.version !== '1.2') {
    const at = Math.max(0, text.indexOf('%YAML'));
    out.error(at, '(root)', `a \`%YAML ${doc.directives.yaml.version}\` directive: lb.yaml is read as YAML 1.2 (\`yes\` and \`no\` are strings): remove the line`);
    return failed();
  }
  // Every tag, the core ones (`!!int "5"`, `!!str`) too: lb.yaml has no use for them, and an unknown one (`!secret`)
  // would make the value empty. At the tag, with the key path of the value it tags.
  visit(doc, {
    Node(_key, node) {
      if (node.tag === undefined || node.range == null) return;
      if (!mentionsOurKeys(text)) {
        out.error(0, '(root)', NOT_OUR_FILE);
        return visit.BREAK;
      }
      const at = tagOffset(text, node.range[0]);
      const path = cutAtSecret(pathAtOffset(doc, node.range[0]));
      out.error(at, path, onSecretLine(text, at) || isSecretPath(path) ? secretNotYamlAt(text, at, path) : YAML_TAG);
      return undefined;
    },
  });
  if (out.errorCount > 0) return failed();
  for (const w of doc.warnings) {
    const at = w.pos[0];
    if (w.code === 'TAG_RESOLVE_FAILED' || w.code === 'BAD_COLLECTION_TYPE') {
      // A tag the visit above did not see (it sees every node: a guard). lb.yaml has no use for tags: a value that
      // starts with `!` is meant as text (a password), and the library would read it as empty. An error, which
      // quotes neither the tag nor another program's file.
      if (!mentionsOurKeys(text)) {
        out.error(0, '(root)', NOT_OUR_FILE);
        continue;
      }
      out.error(at, cutAtSecret(pathAtOffset(doc, at)), onSecretLine(text, at) ? secretNotYamlAt(text, at, '') : YAML_TAG);
      continue;
    }
    out.warn(at, cutAtSecret(pathAtOffset(doc, at)), w.message);
  }
  if (out.errorCount > 0) return failed();

  const absFile = resolve(file);
  const { config, files, hostRefs } = validateDocument(new ConfigReader(doc, out), absFile, dirname(absFile));
  if (opts.checkFiles === true) {
    checkFiles(files, out, config);
    // The interface list only when there is something to check against it (failover on): not at every load.
    if (hostRefs.length > 0) {
      checkHost(hostRefs, out, opts.hostAddresses ?? hostAddresses(), vipAddresses(config.failover?.instances ?? []));
      checkFailoverPrograms(hostRefs, out, opts.onPath ?? isOnPath);
    }
  }

  const problems = out.sortedProblems();
  const locate = (path: string): string | null => {
    const node: unknown = doc.getIn(pathSegments(path, poolNames(doc)), true);
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    return range === undefined ? null : out.where(range[0]);
  };
  return { config: problems.length === 0 ? config : null, problems, warnings: out.sortedWarnings(), locate };
}

/** The pool names as written (a name may hold a `.`: `eu.west`). */
function poolNames(doc: Document.Parsed): string[] {
  const pools = doc.get('pools', true);
  return isMap(pools) ? pools.items.map((p) => String((p.key as { value?: unknown } | null)?.value ?? '')) : [];
}

/**
 * `pools.main.servers[1].address` as the keys and indexes yaml's getIn takes; a pool's name is taken whole (the
 * longest of `pools` that the path starts with), dots and all (a re-audit: `pools.eu.west...` lost its position).
 */
function pathSegments(path: string, pools: readonly string[] = []): Array<string | number> {
  const segments: Array<string | number> = [];
  let rest = path;
  if (path.startsWith('pools.')) {
    const name = pools.filter((p) => path.startsWith(`pools.${p}.`) || path === `pools.${p}`).sort((a, b) => b.length - a.length)[0];
    if (name !== undefined) {
      segments.push('pools', name);
      rest = path.slice(`pools.${name}.`.length);
      if (rest === '') return segments;
    }
  }
  for (const part of rest.split('.')) {
    const m = /^([^[]*)((?:\[\d+\])*)$/.exec(part);
    if (m === null) return [];
    if (m[1] !== '') segments.push(m[1]!);
    for (const index of m[2]!.matchAll(/\[(\d+)\]/g)) segments.push(Number(index[1]));
  }
  return segments;
}

export interface LoadOptions {
  /** Receives each warning (already formatted); the default drops them. */
  onWarning?: (warning: string) => void;
  /** At start: problems only with the files the config names throw ConfigFileError (exit 2), not ConfigError. */
  filesAsStartError?: boolean;
  /** A reload: the config must be a regular file (readConfigFile's `regularOnly`). */
  regularOnly?: boolean;
}

/** No lb.yaml is this large; a bound keeps `--config /dev/zero` (or a runaway generator) from eating memory. */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/**
 * A config file's text, at most MAX_CONFIG_BYTES (read in chunks: pipes and devices too, for `check` and a start:
 * `--config <(generate)`). `regularOnly` (a reload, in a balancer that serves): anything but a regular file is
 * refused without waiting, as a FIFO with no writer would block the open, or an empty one the read, and with them
 * the event loop and every session (an audit: a reload of a FIFO froze the balancer until someone wrote to it).
 */
export function readConfigFile(file: string, regularOnly = false): ConfigText {
  const fd = regularOnly
    ? openRegularFile(file, 'not a regular file (a pipe, a socket or a device): a reload reads the file again, and that would wait for its writer with every session').fd
    : openSync(file, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      total += n;
      if (total > MAX_CONFIG_BYTES) throw new Error(`larger than ${MAX_CONFIG_BYTES / (1024 * 1024)} MiB: not a config file`);
      chunks.push(chunk.subarray(0, n));
    }
    const bytes = Buffer.concat(chunks, total);
    return { text: bytes.toString('utf8'), notUtf8At: isUtf8(bytes) ? null : notUtf8Offset(bytes) };
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads and validates a config file, checking the files it names.
 * Throws MqttLbError(CONFIG_READ) when the file cannot be read, ConfigError (every problem) when it is invalid.
 */
export function loadConfig(file: string, opts: LoadOptions = {}): LbConfig {
  let read: ConfigText;
  try {
    read = readConfigFile(file, opts.regularOnly === true);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new MqttLbError(ErrorCodes.CONFIG_READ, `cannot read config file ${file}: ${reason}`, { cause: err });
  }
  const { text, notUtf8At } = read;
  const outcome = parseConfig(text, file, { checkFiles: true, notUtf8At });
  if (outcome.config === null) {
    // Valid without looking at the files: what is wrong is a file, not the config.
    const withoutFiles = opts.filesAsStartError === true ? parseConfig(text, file, { notUtf8At }).config : null;
    if (withoutFiles !== null) throw new ConfigFileError(outcome.problems, withoutFiles.log);
    throw new ConfigError(outcome.problems);
  }
  for (const w of outcome.warnings) opts.onWarning?.(w);
  return outcome.config;
}

function checkFiles(files: FileRef[], out: ProblemCollector, config: LbConfig): void {
  const usable = new Map<string, FileRef>();
  for (const f of files) {
    if (f.use === 'state') checkStateFile(f, out, files, config.file);
    else if (checkFile(f, out)) usable.set(f.path, f);
  }
  checkTlsMaterial(usable, out, config);
  for (const [path, ref] of usable) if (/^listeners\[\d+\]\.tls\.key$/.test(path)) checkKeyReaders(ref, out);
  checkFailoverKey(usable.get('failover.authKeyFile'), out);
  checkScriptSecurity(usable.get('failover.notify'), out, 'hook');
  for (const [path, ref] of usable) if (/^failover\.track\.scripts\[\d+\]\.command$/.test(path)) checkScriptSecurity(ref, out, 'script');
}

/**
 * What only this host can tell about the failover settings: a peer that is this host itself (a config copied from
 * the other host unchanged: this host would be master alone), and an interface that is not here or has no IPv4
 * address (the start fails, exit 2, until it has one). Warnings: the address may come and go (a reload must
 * not be refused for an interface down for a moment).
 */
function checkHost(refs: readonly HostRef[], out: ProblemCollector, host: ReadonlyMap<string, readonly string[]>, vips: ReadonlySet<string>): void {
  for (const ref of refs) {
    if (ref.kind === 'peer') {
      const own = [...host].find(([, addresses]) => addresses.includes(ref.value))?.[0];
      if (own !== undefined) out.warn(ref.at, ref.path, `\`${ref.value}\` is an address of this host (${own}): adverts sent to it reach no peer, and this host is master alone; list the other LB host's address`);
    } else {
      // Addresses with a label (ifupdown's `eth0:0`, `ip addr ... label`) are listed under the label's name.
      const own = [...host].filter(([name]) => name === ref.value || name.startsWith(`${ref.value}:`));
      const ipv4 = own.flatMap(([, addresses]) => addresses.filter((a) => isIPv4(a)));
      if (ipv4.length > 0 && ipv4.every((a) => vips.has(a))) {
        // As the start judges it (heartbeat.ts): a VIP is most likely the host's own address, and the start refuses.
        out.warn(ref.at, ref.path, `\`${ref.value}\` has no IPv4 address besides the VIP ${ipv4.join(', ')}: is it this host's own address? A VIP must be an address no host owns (it is removed whenever this host is not master); the start refuses (exit 2)`);
        continue;
      }
      if (ipv4.length > 0) continue;
      const why = own.length > 0 ? 'has no IPv4 address on this host' : 'is not an interface of this host with an address';
      out.warn(ref.at, ref.path, `\`${ref.value}\` ${why}: failover waits until it has one (adverts need a source address): no VIP on this host meanwhile, while the proxy serves`);
    }
  }
}

/**
 * The programs the failover runs: `ip` moves the VIPs, `arping` announces them. Without `arping` a host that took
 * the VIP over was reached by no client whose ARP entry still named the old master, ~30 s in a failover audit
 * (keepalived sends its gratuitous ARP itself). Warnings: they may be installed before the start.
 */
function checkFailoverPrograms(refs: readonly HostRef[], out: ProblemCollector, onPath: (program: string) => boolean): void {
  const at = refs.find((r) => r.kind === 'interface') ?? refs[0]!;
  if (!onPath('ip')) out.warn(at.at, 'failover', '`ip` (iproute2) is not on PATH: no VIP can be added or removed, so this host never holds one (apt-get install iproute2)');
  if (!onPath('arping')) out.warn(at.at, 'failover', '`arping` (iputils-arping) is not on PATH: a host that takes a VIP over cannot announce it, and clients whose ARP entry names the old master do not reach it until the entry expires (~30 s; apt-get install iputils-arping)');
}

function isOnPath(program: string): boolean {
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, program), constants.X_OK);
      return true;
    } catch {
      // not there, or not executable: the next directory
    }
  }
  return false;
}

function hostAddresses(): Map<string, string[]> {
  return new Map(Object.entries(networkInterfaces()).map(([name, addrs]) => [name, (addrs ?? []).map((a) => a.address)]));
}

/**
 * The notify hook and the track scripts run with this process's capabilities: no one else may change them
 * (script-security.ts). `what` names it in the message.
 */
function checkScriptSecurity(ref: FileRef | undefined, out: ProblemCollector, what: 'hook' | 'script'): void {
  if (ref === undefined) return;
  const why = scriptInsecurity(ref.resolved);
  if (why !== null) out.error(ref.at, ref.path, `${why}: whoever can change the ${what} runs commands with this process's privileges (chmod go-w, chown root)`);
}

/**
 * A TLS private key that every user of the host may read (a security audit: 0644 passed without a word, where the
 * failover key gets a warning). Group-readable is left alone: Debian's keys are 0640 root:ssl-cert.
 */
function checkKeyReaders(ref: FileRef, out: ProblemCollector): void {
  const mode = statSync(ref.resolved).mode;
  if ((mode & 0o004) !== 0) out.warn(ref.at, ref.path, `is readable by every user of this host (mode ${(mode & 0o777).toString(8)}): anyone can impersonate this listener with it (chmod o-r)`);
}

/** The failover key file holds what start needs: one base64 line of 32 bytes (src/failover/key.ts). */
function checkFailoverKey(ref: FileRef | undefined, out: ProblemCollector): void {
  if (ref === undefined) return;
  const problem = keyProblem(readFileSync(ref.resolved, 'utf8'));
  if (problem !== null) out.error(ref.at, ref.path, problem);
  else {
    const mode = statSync(ref.resolved).mode;
    if ((mode & 0o077) !== 0) out.warn(ref.at, ref.path, `is readable by group or others (mode ${(mode & 0o777).toString(8)}): anyone who reads it can forge adverts (chmod 600)`);
  }
}

/**
 * Each listener's TLS files, whose existence passed: read and loaded as start would (tls-material.ts), so that
 * a certificate that does not match its key, or a CA file of no certificate, fails `check` and not the start.
 * The pair and the CA are judged apart: a bad key does not hide a bad CA ("all problems at once").
 * What passed is kept in the config (`tls.material`): the bytes checked are the bytes served.
 */
function checkTlsMaterial(usable: Map<string, FileRef>, out: ProblemCollector, config: LbConfig): void {
  const prefixes = new Map<string, number>();
  for (const path of usable.keys()) {
    const m = /^(listeners\[(\d+)\]\.tls)\.(?:cert|key|ca)$/.exec(path);
    if (m !== null) prefixes.set(m[1]!, Number(m[2]));
  }
  for (const [prefix, index] of prefixes) {
    const bytes = (field: 'cert' | 'key' | 'ca'): { ref: FileRef; data: Buffer } | null | undefined => {
      const ref = usable.get(`${prefix}.${field}`);
      if (ref === undefined) return undefined;
      try {
        return { ref, data: readFileSync(ref.resolved) };
      } catch (err) {
        out.error(ref.at, ref.path, `cannot read: ${(err as Error).message}`);
        return null;
      }
    };
    const cert = bytes('cert');
    const key = bytes('key');
    const ca = bytes('ca');
    const refs = { cert: cert?.ref, key: key?.ref, ca: ca?.ref };
    const problems: TlsMaterialProblem[] = [];
    if (ca) problems.push(...nonNull(tlsCaProblem(ca.data)));
    if (cert && key) problems.push(...nonNull(tlsPairProblem(cert.data, key.data)));
    // At the value of the file that is wrong.
    for (const p of problems) out.error(refs[p.field]!.at, `${prefix}.${p.field}`, p.message);
    if (problems.length > 0 || !cert || !key || ca === null) continue;
    const warning = tlsCertificateWarning(cert.data);
    if (warning !== null) out.warn(cert.ref.at, `${prefix}.cert`, warning);
    const tls = config.listeners[index]?.tls;
    if (tls?.cert === cert.ref.resolved) tls.material = { cert: cert.data.toString('utf8'), key: key.data.toString('utf8'), ca: ca?.data.toString('utf8') ?? null };
  }
}

function nonNull<T>(value: T | null): T[] {
  return value === null ? [] : [value];
}

/**
 * admin.stateFile: mqtt-lb writes it (a temporary file beside it, renamed over it; through a symbolic link, beside
 * the file it names), so that directory must be there and writable; the file itself may not exist yet. It must not
 * be a file the config uses otherwise. One that exists but cannot be read as a state file is only a warning: the
 * start ignores it (every server starts ready) and never writes over it.
 */
function checkStateFile(f: FileRef, out: ProblemCollector, files: readonly FileRef[], configFile: string): void {
  const shown = f.written === f.resolved ? `\`${f.written}\`` : `\`${f.written}\` (${f.resolved})`;
  const target = adminStateTarget(f.resolved);
  if (target === adminStateTarget(configFile)) return out.error(f.at, f.path, `${shown} is the config file itself`);
  const other = files.find((o) => o !== f && adminStateTarget(o.resolved) === target);
  if (other !== undefined) return out.error(f.at, f.path, `${shown} is the file of \`${other.path}\``);
  const dir = dirname(target);
  try {
    const st = statSync(dir);
    if (!st.isDirectory()) return out.error(f.at, f.path, `the directory of ${shown} is not a directory`);
    accessSync(dir, constants.W_OK | constants.X_OK);
    // Whoever may write there may put a file of their own at that name before a start, and so choose which servers
    // start drained or in maintenance (a security audit: a shared /tmp or a group-writable directory).
    const me = process.geteuid?.() ?? 0;
    const writers = (st.mode & 0o002) !== 0 ? 'others' : (st.mode & 0o020) !== 0 ? 'its group' : st.uid !== 0 && st.uid !== me ? `its owner, uid ${st.uid} (neither root nor this user)` : null;
    if (writers !== null) out.warn(f.at, f.path, `the directory of ${shown} is writable by ${writers} (mode ${(st.mode & 0o7777).toString(8)}): whoever can write there can choose the servers' admin states at the next start, or stop it (a directory at that name); use a directory of this service's own (systemd's StateDirectory=)`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return out.error(f.at, f.path, code === 'ENOENT' ? `the directory of ${shown} does not exist` : `the directory of ${shown} is not writable (${code ?? 'error'}): mqtt-lb writes the file there`);
  }
  try {
    const skipped: string[] = [];
    if (readAdminStateFile(f.resolved, skipped) === null) return;
    for (const why of skipped) out.warn(f.at, f.path, `${shown}: ${why}; a start skips it and restores the others`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EISDIR' ? 'is a directory' : code !== undefined ? `cannot be read (${code})` : `is not an admin state file: ${(err as Error).message}`;
    if (code === 'EISDIR') return out.error(f.at, f.path, `${shown} ${why}`);
    return out.warn(f.at, f.path, `${shown} ${why}; a start ignores it (every server starts ready) and never writes over it: move it away`);
  }
}

/** `is a symbolic link to X, which does not exist` for a dangling link (a certificate renewal that went wrong); else null. */
function danglingTarget(path: string): string | null {
  try {
    return `is a symbolic link to \`${readlinkSync(path)}\`, which does not exist`;
  } catch {
    return null;
  }
}

/** True when the file is there and usable (readable, or executable for a notify script). */
function checkFile(f: FileRef, out: ProblemCollector): boolean {
  const shown = f.written === f.resolved ? `\`${f.written}\`` : `\`${f.written}\` (${f.resolved})`;
  let isFile: boolean;
  try {
    isFile = statSync(f.resolved).isFile();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // keepalived's `notify_master "/x/notify.sh MASTER"`: the hook is one file, given its arguments by mqtt-lb.
    const spaced = f.use === 'execute' && /\s/.test(f.written.trim());
    // keepalived's `script "/x/check.sh 10.0.0.1"` likewise: the command is one file, its arguments a list.
    const hook = f.path === 'failover.notify';
    const args = !spaced ? '' : hook ? ': arguments cannot be given, the hook is called as `notify STATE ROUTER_ID`' : ': arguments go in `args` (a list), without a shell';
    // The failover key is made, not found (a new user's audit: `does not exist` and no word of keygen).
    const make = f.path === 'failover.authKeyFile' ? ': `mqtt-lb keygen > FILE` makes one (mode 0600; the same file on both LB hosts)' : '';
    out.error(f.at, f.path, code === 'ENOENT' ? `file ${shown} ${danglingTarget(f.resolved) ?? 'does not exist'}${args}${make}` : `cannot access file ${shown} (${code ?? 'error'})`);
    return false;
  }
  if (!isFile) {
    out.error(f.at, f.path, `${shown} is not a regular file`);
    return false;
  }
  try {
    accessSync(f.resolved, f.use === 'execute' ? constants.X_OK : constants.R_OK);
  } catch {
    out.error(f.at, f.path, `file ${shown} is not ${f.use === 'execute' ? 'executable' : 'readable'}`);
    return false;
  }
  return true;
}

/**
 * The key path of the innermost node at `offset`, to place a YAML syntax error in the config's terms.
 * An error at the end of an unterminated collection sits just past its range: the last node before
 * the offset, touching it, is taken then.
 */
export function pathAtOffset(doc: Document.Parsed, offset: number): string {
  let path = '';
  let node: ParsedNode | null = doc.contents;
  for (let depth = 0; node !== null && depth < 64; depth++) {
    const children: Array<{ key: ParsedNode | null; segment: string; value: ParsedNode | null }> = [];
    if (isMap(node)) {
      for (const pair of node.items) {
        const key = pair.key;
        const name = 'value' in key && key.value !== null && typeof key.value !== 'object' ? String(key.value) : '?';
        children.push({ key, segment: joinPath(path, name), value: pair.value });
      }
    } else if (isSeq(node)) {
      for (const [i, item] of node.items.entries()) children.push({ key: null, segment: `${path}[${i}]`, value: item });
    }
    let next: { segment: string; value: ParsedNode } | null = null;
    let touching: { segment: string; value: ParsedNode } | null = null;
    for (const c of children) {
      if (c.key !== null && c.key.range[0] <= offset && offset < c.key.range[2]) return c.segment;
      if (c.value === null) continue;
      if (c.value.range[0] <= offset && offset < c.value.range[2]) {
        next = { segment: c.segment, value: c.value };
        break;
      }
      if (c.value.range[0] <= offset && offset <= c.value.range[2]) touching = { segment: c.segment, value: c.value };
    }
    next ??= touching;
    if (next === null) break;
    path = next.segment;
    node = next.value;
  }
  return path;
}

/**
 * Where the first byte that is not UTF-8 is, as an offset into the text parseConfig positions against (decoded,
 * without a byte-order mark). What comes before it decodes as it is, so its length in characters is the offset.
 */
function notUtf8Offset(bytes: Buffer): number {
  let end = 0;
  while (end < bytes.length) {
    const n = utf8SequenceLength(bytes, end);
    if (n === 0) break;
    end += n;
  }
  const before = bytes.subarray(0, end).toString('utf8');
  return before.charCodeAt(0) === 0xfeff ? before.length - 1 : before.length;
}

/** The length of the valid UTF-8 sequence at `i` (RFC 3629: no overlongs, no surrogates, at most U+10FFFF), or 0. */
function utf8SequenceLength(b: Buffer, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/**
 * A quoted scalar or a flow collection (`[`, `{`) that the file never closes, found on the library's token
 * stream: its offset and a message, or null.
 */
function unclosedOpening(text: string): { offset: number; message: string } | null {
  let found: { offset: number; message: string } | null = null;
  for (const token of new Parser().parse(text)) {
    if (token.type !== 'document') continue;
    CST.visit(token, (item) => {
      if (found !== null) return CST.visit.BREAK;
      for (const t of [item.key, item.value]) {
        if (t === null || t === undefined) continue;
        if ((t.type === 'double-quoted-scalar' || t.type === 'single-quoted-scalar') && !closedQuote(t.source)) {
          const q = t.source[0]!;
          found = { offset: t.offset, message: `unclosed ${q === '"' ? 'double' : 'single'} quote: no matching \`${q}\` (or the value's next line is not indented more than its key)` };
          return CST.visit.BREAK;
        }
        if (t.type === 'flow-collection' && (t.end.length === 0 || !t.end.some((e) => e.source === ']' || e.source === '}'))) {
          const open = t.start.source;
          found = { offset: t.offset, message: `unclosed \`${open}\`: no matching \`${open === '[' ? ']' : '}'}\` (or a line inside it is not indented more than its key)` };
          return CST.visit.BREAK;
        }
      }
      return undefined;
    });
    if (found !== null) return found;
  }
  return found;
}

function closedQuote(source: string): boolean {
  const q = source[0];
  if (source.length < 2 || source[source.length - 1] !== q) return false;
  if (q === "'") return true; // '' inside is an escaped quote; the lexer ends the token at the closing one
  // A double-quoted source ending in \" has its closing quote escaped unless the backslash is escaped too.
  let backslashes = 0;
  for (let i = source.length - 2; i > 0 && source[i] === '\\'; i--) backslashes++;
  return backslashes % 2 === 0;
}

/** The line of a "key without a value" error, when it reads `key:value` (no space after the colon); null otherwise. */
function keyWithoutSpace(text: string, e: { code: string; message: string; pos: [number, number] }): { at: number; key: string; rest: string } | null {
  // As the last key of its mapping the library says the key has no value; before another key, that the key runs
  // over several lines (it reads on into the next line); either way the error starts on the slip's line.
  const missingValue = e.code === 'MISSING_CHAR' && e.message.startsWith('Implicit map keys need to be followed by map values');
  if (!missingValue && e.code !== 'MULTILINE_IMPLICIT_KEY') return null;
  const line = lineAt(text, e.pos[0]);
  const m = /^([ \t]*(?:- )?)([A-Za-z_][\w-]*):(\S+)[ \t]*$/.exec(line.text);
  return m === null ? null : { at: line.start + m[1]!.length, key: m[2]!, rest: m[3]! };
}

/**
 * The library's words for a line indented wrongly ("Tabs are not allowed as indentation", "Sequence item without -
 * indicator", "All mapping items must start at the same column") say what its parser met, not what to change: say
 * that, at the line's first character. The line belongs to no key yet: it is named as a key of the mapping the line
 * above it is in when it is indented no farther from that mapping's keys than from its parent (5 spaces among keys at
 * 6 under a parent at 4, as the library reads it), else by that mapping alone; a line at the column of a list's `- `
 * is an item without one. (The library's own position may be the blank line before, or the key after an indent.)
 */
function indentationProblem(
  text: string,
  e: { code: string; message: string; pos: [number, number] },
  pathAt: (offset: number) => string,
): { at: number; path: string; message: string } | null {
  const isTab = e.code === 'TAB_AS_INDENT';
  const isSequence = e.code === 'MISSING_CHAR' && e.message.startsWith('Sequence item without');
  const isMapping = e.code === 'BAD_INDENT' && e.message.startsWith('All mapping items');
  if (!isTab && !isSequence && !isMapping) return null;
  const { line, spaces, at } = contentLineAt(text, e.pos[0]);
  const key = /^[ \t]*(?:- )?([A-Za-z_][\w-]*)[ \t]*:(?:[ \t]|$)/.exec(line.text)?.[1] ?? null;
  const above = contentLinesAbove(text, line.start);
  // The path where the line above ends: its own key, as with no such error.
  const before = above[0] === undefined ? '(root)' : pathAt(above[0].end);
  const mapping = before.includes('.') ? before.slice(0, before.lastIndexOf('.')) : null;
  const inMapping = (m: string | null): string => (m === null ? (key ?? '(root)') : key === null ? m : `${m}.${key}`);
  // A tab's depth is unknown: under a top-level key, the line is only known to be in the file. Below a key that
  // opens a mapping (`brokers:` and nothing after it), the line is taken as that key's child (a reload audit saw
  // `pools.servers` for a tab-indented `servers:` under `pools.brokers`).
  if (isTab) {
    const opens = above[0] !== undefined && before !== '' && before !== '(root)' && !/^[ \t]*- /.test(line.text) && /:[ \t]*(?:#.*)?$/.test(text.slice(above[0].start, above[0].end));
    const parent = opens ? before : mapping;
    return { at: e.pos[0], path: parent === null ? '(root)' : inMapping(parent), message: 'a tab in the indentation: YAML indents with spaces only' };
  }
  const item = above.find((l) => l.indent <= spaces);
  if (item !== undefined && item.dash && item.indent === spaces) {
    // The list of that `- `: the path inside its item, up to the item's index.
    const inItem = pathAt(item.start + item.indent + 2);
    const list = /^(.*)\[\d+\](?:\.[^[\]]*)?$/.exec(inItem)?.[1] ?? inItem;
    // `address:` under `- name: b1`, at the dash: most often meant as the item's next key (a new user's audit: told
    // only to start an item, which would have made a server without a name).
    // Not when the item above has that key already (`name:` again: a new item whose `- ` was left out).
    const itemKey = /^ *- ([A-Za-z_][\w-]*)[ \t]*:/.exec(text.slice(item.start, item.end))?.[1];
    const itemText = text.slice(item.start, line.start);
    const itemHasKey = key !== null && (key === itemKey || new RegExp(`^ {${item.indent + 2}}${key}[ \\t]*:`, 'm').test(itemText));
    const addTo = key !== null && itemKey !== undefined && !itemHasKey ? `: to add \`${key}\` to the item above, indent it as its \`${itemKey}\` (column ${item.indent + 3}); a new item starts with \`- \`` : ': each item of a list starts with `- `';
    return { at, path: list, message: `at the column of the list's \`- \` but without one${addTo}` };
  }
  const indented = `indented by ${spaces} ${spaces === 1 ? 'space' : 'spaces'}`;
  const siblings = above[0] === undefined ? 0 : above[0].indent + (above[0].dash ? 2 : 0);
  const parent = above.find((l) => l.indent < siblings)?.indent ?? 0;
  const nearSiblings = Math.abs(spaces - siblings) <= Math.abs(spaces - parent);
  return {
    at,
    path: nearSiblings ? inMapping(mapping) : (mapping ?? '(root)'),
    message: isSequence
      ? `${indented}, which matches no key above it: indent it as the keys it belongs with`
      : `${indented}, unlike the keys beside it: the keys of a mapping start at the same column`,
  };
}

/** The line around `offset`: its text without the line break, where it starts and ends, whether it holds nothing. */
function lineAt(text: string, offset: number): { text: string; start: number; end: number; blank: boolean } {
  const start = text.lastIndexOf('\n', offset - 1) + 1;
  const next = text.indexOf('\n', start);
  const end = next < 0 ? text.length : next + 1;
  const line = text.slice(start, end).replace(/\r?\n$/, '');
  return { text: line, start, end, blank: /^[ \t]*(?:#.*)?$/.test(line) };
}

/** The first line from `offset` on that holds something, its indentation and where that ends (its first character). */
function contentLineAt(text: string, offset: number): { line: ReturnType<typeof lineAt>; spaces: number; at: number } {
  let line = lineAt(text, offset);
  while (line.blank && line.end < text.length) line = lineAt(text, line.end);
  const spaces = /^ */.exec(line.text)![0].length;
  return { line, spaces, at: line.start + spaces };
}

/** The lines above `lineStart` that hold something (not blank, not only a comment), nearest first. */
function contentLinesAbove(text: string, lineStart: number): Array<{ indent: number; dash: boolean; start: number; end: number }> {
  const out: Array<{ indent: number; dash: boolean; start: number; end: number }> = [];
  for (let start = lineStart; start > 0; ) {
    const line = lineAt(text, start - 1);
    start = line.start;
    if (line.blank) continue;
    const m = /^( *)(- )?/.exec(line.text)!;
    // `end` within the line's content: the path there is the line's own key.
    out.push({ indent: m[1]!.length, dash: m[2] !== undefined, start: line.start, end: line.start + line.text.length });
  }
  return out;
}

/** The key path at an offset, for a problem found before the file is parsed; (root) when it cannot be parsed. */
function keyPathNear(text: string, offset: number): string {
  try {
    return syntaxPath(parseDocument(text, { uniqueKeys: false, prettyErrors: false }), offset);
  } catch {
    return '(root)';
  }
}

/**
 * The key path at a syntax error: parts of a broken key (with spaces in them) are no key of the file, and nothing
 * after a secret is (a password YAML read as a key would be quoted: cutAtSecret).
 */
function syntaxPath(doc: Document.Parsed, offset: number): string {
  const path = pathAtOffset(doc, offset);
  const parts = path.split('.');
  while (parts.length > 1 && /\s/.test(parts[parts.length - 1]!)) parts.pop();
  return /\s/.test(parts[0]!) ? '(root)' : cutAtSecret(parts.join('.'));
}
