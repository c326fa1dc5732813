/**
 * The descriptor budget (src/proxy/fd-budget.ts): caps clamped so that every listener at its Node-level
 * accept cap, plus a server socket per session, plus the reserve for probes/admin, fit the open-file limit.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { workerShare } from '../../src/cluster/share.js';
import { budgetForConfig, clampToBudget, clampsToSay, hardCapFor, openFileLimit, parseOpenFileLimit, reserveFor, type BudgetInput } from '../../src/proxy/fd-budget.js';
import type { LbConfig } from '../../src/config/types.js';

const PROC_LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                20000                files
Max locked memory         8388608              8388608              bytes
`;

/** Worst case descriptors: every listener at its hard cap, a server socket per session, the reserve. */
/** Every listener at its last guard holding client sockets, a server socket per session, and the reserve. */
function worstCase(input: BudgetInput, out: ReturnType<typeof clampToBudget>): number {
  let clients = 0;
  for (const [name, v] of out.listenerMax) {
    const hard = out.listenerHard.get(name) ?? hardCapFor(v);
    expect(hard).toBeGreaterThanOrEqual(hardCapFor(v)); // never less room to answer than the minimum
    clients += hard;
  }
  // A server socket per session: no more sessions than the global cap allows and the listeners hold together.
  const held = [...out.listenerMax.values()].reduce((sum, v) => sum + v, 0);
  return clients + Math.min(out.globalMax, held) + reserveFor(input.servers);
}

describe('open-file limit', () => {
  it('parses /proc/self/limits', () => {
    expect(parseOpenFileLimit(PROC_LIMITS)).toBe(20000);
    expect(parseOpenFileLimit(PROC_LIMITS.replace('20000                20000', 'unlimited            unlimited'))).toBe(Number.MAX_SAFE_INTEGER);
    expect(parseOpenFileLimit('Max cpu time unlimited unlimited seconds\n')).toBeNull();
  });

  it('reads this process limit', () => {
    const n = openFileLimit();
    if (n !== null) {
      expect(Number.isInteger(n)).toBe(true);
      expect(n).toBeGreaterThan(0);
    }
  });
});

describe('clampToBudget', () => {
  it('leaves caps alone without a known limit', () => {
    const b = clampToBudget({ fileLimit: null, globalMax: 1e6, listeners: [{ name: 'a', maxConnections: 1e6 }], servers: 3 });
    expect(b.globalMax).toBe(1e6);
    expect(b.listenerMax.get('a')).toBe(1e6);
    expect(b.warnings).toEqual([]);
  });

  it('a limit that leaves room for no session is refused, naming a limit that does (noRoom)', () => {
    const listeners = [{ name: 'a', maxConnections: 100 }, { name: 'b', maxConnections: 100 }];
    const tight = clampToBudget({ fileLimit: reserveFor(10) + 20, globalMax: 100, listeners, servers: 10 });
    expect(tight.noRoom).toMatch(/^the open-file limit \d+ leaves no room for a client session .* raise it .* to at least (\d+)/);
    const needed = Number(/at least (\d+)/.exec(tight.noRoom!)![1]);
    const enough = clampToBudget({ fileLimit: needed, globalMax: 100, listeners, servers: 10 });
    expect(enough.noRoom).toBeNull();
    expect(Math.min(...enough.listenerMax.values())).toBeGreaterThanOrEqual(1);
    expect(enough.globalMax).toBeGreaterThanOrEqual(1);
    expect(clampToBudget({ fileLimit: needed - 1, globalMax: 100, listeners, servers: 10 }).noRoom).not.toBeNull();
    expect(clampToBudget({ fileLimit: null, globalMax: 100, listeners, servers: 10 }).noRoom).toBeNull();
  });

  it('leaves caps that fit alone, without warnings', () => {
    const input = { fileLimit: 20_000, globalMax: 5000, listeners: [{ name: 'mqtt', maxConnections: 5000 }], servers: 3 };
    const b = clampToBudget(input);
    expect(b.globalMax).toBe(5000);
    expect(b.listenerMax.get('mqtt')).toBe(5000);
    expect(b.warnings).toEqual([]);
    expect(worstCase(input, b)).toBeLessThanOrEqual(20_000);
  });

  it('clamps the defaults (global 20000, listener 10000) at a 20,000 limit, with warnings naming the keys', () => {
    const input = { fileLimit: 20_000, globalMax: 20_000, listeners: [{ name: 'mqtt', maxConnections: 10_000 }], servers: 2 };
    const b = clampToBudget(input);
    const sessions = Math.floor((20_000 - reserveFor(2)) / 2.1);
    expect(b.globalMax).toBe(sessions);
    expect(b.listenerMax.get('mqtt')).toBe(sessions);
    expect(b.warnings).toHaveLength(2);
    expect(b.warnings[0]).toMatch(/^limits\.maxConnections 20000 clamped to \d+: the open-file limit is 20000/);
    expect(b.warnings[1]).toMatch(/^listeners\[0\]\.maxConnections \(listener mqtt\) 10000 clamped to /);
    expect(worstCase(input, b)).toBeLessThanOrEqual(20_000);
  });

  it('shares the limit between listeners: together they never exceed it; the largest caps give way first', () => {
    const input = {
      fileLimit: 20_000,
      globalMax: 20_000,
      listeners: [
        { name: 'mqtt', maxConnections: 10_000 },
        { name: 'mqtts', maxConnections: 5_000 },
      ],
      servers: 4,
    };
    const b = clampToBudget(input);
    expect(worstCase(input, b)).toBeLessThanOrEqual(20_000);
    const mqtt = b.listenerMax.get('mqtt')!;
    const mqtts = b.listenerMax.get('mqtts')!;
    expect(mqtt).toBeLessThan(10_000);
    expect(mqtts).toBeLessThan(5_000);
    // Both above the level that fits: both at it (max-min fair), as high as it can be.
    expect(mqtt).toBe(mqtts);
    expect(worstCase(input, { ...b, listenerMax: new Map([['mqtt', mqtt + 1], ['mqtts', mqtts + 1]]), listenerHard: new Map() })).toBeGreaterThan(20_000);
    expect(b.warnings.some((w) => /listeners\[1\]\.maxConnections \(listener mqtts\) 5000 lowered to \d+: the client sockets of every listener .* must fit the open-file limit 20000/.test(w))).toBe(true);
  });

  it('a small listener keeps its cap beside large ones, and a listener is sized by what the global cap lets it hold', () => {
    // From an audit: scaling every cap by one factor lowered a listener of 2 to 1 beside two of 10,000.
    const small = { fileLimit: 20_000, globalMax: 20_000, listeners: [{ name: 'a', maxConnections: 10_000 }, { name: 'small', maxConnections: 2 }, { name: 'c', maxConnections: 10_000 }], servers: 4 };
    const b = clampToBudget(small);
    expect(b.listenerMax.get('small')).toBe(2);
    expect(b.warnings.some((w) => w.includes('listener small'))).toBe(false);
    expect(worstCase(small, b)).toBeLessThanOrEqual(20_000);
    // At 1,024 descriptors: 2 and 100 are kept, the 10,000 one takes the cut.
    const tight = { fileLimit: 1024, globalMax: 20_000, listeners: [{ name: 'big', maxConnections: 10_000 }, { name: 'two', maxConnections: 2 }, { name: 'hundred', maxConnections: 100 }], servers: 2 };
    const t = clampToBudget(tight);
    expect(t.listenerMax.get('two')).toBe(2);
    expect(t.listenerMax.get('hundred')).toBe(100);
    expect(t.listenerMax.get('big')).toBeGreaterThan(100);
    expect(worstCase(tight, t)).toBeLessThanOrEqual(1024);
    // A global cap of 1,000: the 10,000 listener holds at most 1,000 sessions and is sized so, not taking room
    // from the others.
    const global = { fileLimit: 4096, globalMax: 1000, listeners: [{ name: 'big', maxConnections: 10_000 }, { name: 'other', maxConnections: 1000 }], servers: 2 };
    const g = clampToBudget(global);
    expect(g.listenerMax.get('other')).toBe(1000);
    expect(g.listenerMax.get('big')).toBeGreaterThanOrEqual(1000);
    expect(worstCase(global, g)).toBeLessThanOrEqual(4096);
  });

  it('keeps the reserve even at tiny limits (caps may reach 0)', () => {
    for (const fileLimit of [0, 10, 64, 100, 256, 1024]) {
      const input = { fileLimit, globalMax: 20_000, listeners: [{ name: 'a', maxConnections: 10_000 }, { name: 'b', maxConnections: 10_000 }], servers: 5 };
      const b = clampToBudget(input);
      expect(b.globalMax).toBeGreaterThanOrEqual(0);
      for (const v of b.listenerMax.values()) expect(v).toBeGreaterThanOrEqual(0);
      if (fileLimit >= 1024) expect(worstCase(input, b)).toBeLessThanOrEqual(fileLimit);
    }
  });

  it('never raises a cap and always fits, for many random configurations', () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 500; i++) {
      const listeners = Array.from({ length: 1 + rnd(4) }, (_, k) => ({ name: `l${k}`, maxConnections: 1 + rnd(30_000) }));
      const input = { fileLimit: 2048 + rnd(100_000), globalMax: 1 + rnd(60_000), listeners, servers: rnd(50) };
      const b = clampToBudget(input);
      expect(b.globalMax).toBeLessThanOrEqual(input.globalMax);
      for (const l of listeners) expect(b.listenerMax.get(l.name)!).toBeLessThanOrEqual(l.maxConnections);
      expect(worstCase(input, b)).toBeLessThanOrEqual(input.fileLimit);
    }
  });

  it('the descriptors the worst case leaves go to the listeners\' last guards: a storm past a full listener is answered in MQTT', () => {
    // An audit: a listener of 50 beside 20,000 descriptors dropped 284 of 300 clients at accept (its guard was 66).
    const input: BudgetInput = { fileLimit: 20_000, globalMax: 20_000, listeners: [{ name: 'small', maxConnections: 50 }], servers: 2 };
    const b = clampToBudget(input);
    expect(b.listenerMax.get('small')).toBe(50);
    // Server sockets for the 50 sessions it can hold, not for the global cap's 20,000.
    const clientRoom = 20_000 - reserveFor(2) - 50;
    expect(b.listenerHard.get('small')).toBe(clientRoom); // all of it: one listener
    expect(worstCase(input, b)).toBeLessThanOrEqual(20_000);
    // Two listeners share what is left equally, each above its own minimum.
    const two: BudgetInput = { ...input, listeners: [{ name: 'a', maxConnections: 50 }, { name: 'b', maxConnections: 2_000 }] };
    const t = clampToBudget(two);
    const slack = 20_000 - reserveFor(2) - 2_050 - hardCapFor(50) - hardCapFor(2_000);
    expect(t.listenerHard.get('a')).toBe(hardCapFor(50) + Math.floor(slack / 2));
    expect(t.listenerHard.get('b')).toBe(hardCapFor(2_000) + Math.floor(slack / 2));
    expect(worstCase(two, t)).toBeLessThanOrEqual(20_000);
    // Caps clamped to a small limit: what is left is little, and the whole still fits.
    const tight: BudgetInput = { fileLimit: 1_000, globalMax: 20_000, listeners: [{ name: 'x', maxConnections: 10_000 }], servers: 2 };
    const c = clampToBudget(tight);
    expect(worstCase(tight, c)).toBeLessThanOrEqual(1_000);
    // No open-file limit known: no guard beyond the minimum is set here (the listener uses hardCapFor).
    expect(clampToBudget({ ...input, fileLimit: null }).listenerHard.size).toBe(0);
  });

  it('budgetForConfig counts the servers of every probed pool into the reserve (health.type none: no probe socket)', () => {
    const server = { name: 's', address: '127.0.0.1:1', host: '127.0.0.1', port: 1, weight: 1, backup: false, healthUrl: null };
    const config = {
      limits: { maxConnections: 100_000 },
      listeners: [{ name: 'mqtt', maxConnections: 100_000 }],
      pools: {
        a: { servers: [server, server], health: { type: 'mqtt' } },
        b: { servers: [server], health: { type: 'tcp' } },
        c: { servers: [server, server, server, server], health: { type: 'none' } },
      },
    } as unknown as Pick<LbConfig, 'limits' | 'listeners' | 'pools'>;
    const b = budgetForConfig(config, 10_000);
    expect(b.globalMax).toBe(Math.floor((10_000 - reserveFor(3)) / 2.1));
  });
});

describe('a clamp says whether its cap was written in the file', () => {
  it('written: a warning; the default: a note (each cap on its own)', () => {
    const b = clampToBudget({ fileLimit: 384, globalMax: 20_000, globalWritten: false, listeners: [{ name: 'a', maxConnections: 10_000, written: true }, { name: 'b', maxConnections: 10_000 }], servers: 1 });
    expect(b.clamps.map((c) => [c.key, c.written])).toEqual([
      ['limits.maxConnections 20000', false],
      ['listener a maxConnections 10000 written', true],
      ['listener b maxConnections 10000', false],
    ]);
    expect(clampToBudget({ fileLimit: 384, globalMax: 20_000, globalWritten: true, listeners: [], servers: 1 }).clamps[0]!.written).toBe(true);
    // Each says what to do about it: a written cap can also be set this low; a default one is only raised with the limit.
    expect(b.clamps[0]!.warning).toMatch(/\(the default cap; for more sessions, raise the open-file limit: ulimit -n, systemd LimitNOFILE\)$/);
    expect(b.clamps[1]!.warning).toMatch(/or set the cap this low yourself to silence this\)$/);
  });

  it('budgetForConfig reads it from the config (a worker\'s share keeps it)', () => {
    const parsed = parseConfig('listeners:\n  - { name: a, bind: "127.0.0.1:1883", pool: p, maxConnections: 5000 }\n  - { name: b, bind: "127.0.0.1:1884", pool: p }\npools:\n  p:\n    servers: [{ name: s, address: "127.0.0.1:1885" }]\n', 'lb.yaml');
    expect(parsed.problems).toEqual([]);
    const config = parsed.config!;
    for (const c of [config, workerShare(config, 2, 1)]) {
      expect(budgetForConfig(c, 384).clamps.map((x) => [x.key.replace(/( maxConnections)? \d+( written)?$/, ''), x.written])).toEqual([
        ['limits.maxConnections', false],
        ['listener a', true],
        ['listener b', false],
      ]);
    }
    const written = parseConfig(`limits: { maxConnections: 20000 }\n${'listeners:\n  - { name: a, bind: "127.0.0.1:1883", pool: p }\npools:\n  p:\n    servers: [{ name: s, address: "127.0.0.1:1885" }]\n'}`, 'lb.yaml').config!;
    expect(budgetForConfig(written, 384).clamps.map((x) => x.written)).toEqual([true, false]);
  });
});

describe('clampsToSay (what a reload says again)', () => {
  it('says a clamp again when the cap becomes written at the same value: a note becomes a warning (a re-audit)', () => {
    const at = (written: boolean) => clampToBudget({ fileLimit: 384, globalMax: 20_000, globalWritten: written, listeners: [], servers: 1 });
    const first = clampsToSay(new Map(), at(false));
    expect(first.say.map((c) => c.written)).toEqual([false]);
    expect(clampsToSay(first.said, at(true)).say.map((c) => c.written)).toEqual([true]);
    expect(clampsToSay(first.said, at(false)).say).toEqual([]);
  });

  const budget = (globalMax: number, servers: number, fileLimit = 20_000) => clampToBudget({ fileLimit, globalMax, listeners: [{ name: 'mqtt', maxConnections: 100 }], servers });

  it('says a new clamp, not the same again, nor one moved by a server or two of probe reserve', () => {
    const first = clampsToSay(new Map(), budget(20_000, 3));
    expect(first.say).toHaveLength(1);
    expect(first.say[0]!.warning).toMatch(/^limits\.maxConnections 20000 clamped to \d+/);
    expect(clampsToSay(first.said, budget(20_000, 3)).say).toEqual([]);
    // One more server: the clamp moves by a descriptor's worth (well under 1 %).
    const moved = budget(20_000, 4);
    expect(moved.globalMax).not.toBe(budget(20_000, 3).globalMax);
    const again = clampsToSay(first.said, moved);
    expect(again.say).toEqual([]);
    // What was said stays the reference: many small moves add up and are said once they reach 1 %.
    expect(again.said).toEqual(first.said);
    expect(clampsToSay(again.said, budget(20_000, 200)).say).toHaveLength(1);
  });

  it('says it again when the configured value changes, or the clamp moves by 1 % or more', () => {
    const first = clampsToSay(new Map(), budget(20_000, 3, 384));
    expect(clampsToSay(first.said, budget(30_000, 3, 384)).say[0]!.warning).toMatch(/^limits\.maxConnections 30000 clamped to/);
    // At a small clamp, one session is more than 1 %.
    expect(clampsToSay(first.said, budget(20_000, 4, 384)).say.filter((c) => c.warning.startsWith('limits.maxConnections 20000'))).toHaveLength(1);
    // No longer clamped: nothing said, nothing kept.
    expect(clampsToSay(first.said, budget(50, 3))).toEqual({ say: [], said: new Map() });
  });
});

describe('a small open-file limit and several listeners', () => {
  // A limits audit: at 256 descriptors, server sockets set aside for all 29 sessions of the global cap left two
  // listeners no room (the start refused, asking for 258); 7 sessions each fitted.
  it('sets aside server sockets only for the sessions the listeners can hold', () => {
    const input: BudgetInput = { fileLimit: 256, globalMax: 20_000, listeners: [{ name: 'a', maxConnections: 10_000 }, { name: 'b', maxConnections: 20 }], servers: 1 };
    const b = clampToBudget(input);
    expect(b.noRoom).toBeNull();
    expect([b.listenerMax.get('a'), b.listenerMax.get('b')]).toEqual([7, 7]);
    expect(b.globalMax).toBe(29); // as the descriptors allow: a client past a full listener is `listener_full`
    expect(worstCase(input, b)).toBeLessThanOrEqual(256);
    // One session more each would not fit.
    expect(2 * hardCapFor(8) + 16 + reserveFor(1)).toBeGreaterThan(256);
  });
});

// A re-audit: a budget that counted sessions held above a lowered cap left every listener at cap 0 after a reload
// that only added listeners, until another reload. The caps follow the config; the descriptors themselves are
// checked at each accept (Listener, ctx.descriptorRoom), which the budget gives.
describe('descriptorRoom', () => {
  it('is the limit less the reserve, for the accept check; Infinity with no limit known', () => {
    const input: BudgetInput = { fileLimit: 1500, globalMax: 1000, listeners: [{ name: 'low', maxConnections: 5 }, { name: 'big', maxConnections: 1000 }], servers: 1 };
    const out = clampToBudget(input);
    expect(out.descriptorRoom).toBe(1500 - reserveFor(1));
    expect(worstCase(input, out) - reserveFor(1)).toBeLessThanOrEqual(out.descriptorRoom);
    expect(clampToBudget({ ...input, fileLimit: null }).descriptorRoom).toBe(Number.POSITIVE_INFINITY);
  });
});
