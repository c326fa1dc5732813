/** LinkMonitor (src/failover/link-monitor.ts): interface events from `ip -o monitor`, restarted when it ends. */
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LinkMonitor, monitorLineConcerns } from '../../src/failover/link-monitor.js';

class FakeChild extends EventEmitter {
  readonly stdout = new PassThrough();
  killed: string | null = null;
  kill(signal: string): boolean {
    this.killed = signal;
    this.emit('exit', null, signal);
    return true;
  }
}

function setup() {
  const children: FakeChild[] = [];
  const events: number[] = [];
  const warnings: Array<Record<string, unknown>> = [];
  const log = { debug: () => {}, info: () => {}, error: () => {}, warn: (obj: object) => warnings.push(obj as Record<string, unknown>) };
  const monitor = new LinkMonitor('eth0', () => events.push(Date.now()), log, (args) => {
    expect(args).toEqual(['-o', 'monitor', 'link', 'address']);
    const c = new FakeChild();
    children.push(c);
    return c as unknown as ChildProcess;
  });
  return { monitor, children, events, warnings };
}

const flush = () => new Promise((r) => setImmediate(r));

afterEach(() => {
  vi.useRealTimers();
});

describe('LinkMonitor', () => {
  it('reads the interface out of link, veth and address lines, deleted ones too', () => {
    expect(monitorLineConcerns('3: eth0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN', 'eth0')).toBe(true);
    expect(monitorLineConcerns('7: eth0@if8: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500', 'eth0')).toBe(true);
    expect(monitorLineConcerns('3: eth0    inet 10.0.0.5/24 scope global secondary eth0', 'eth0')).toBe(true);
    expect(monitorLineConcerns('Deleted 3: eth0    inet 10.0.0.5/24 scope global secondary eth0', 'eth0')).toBe(true);
    expect(monitorLineConcerns('4: eth0.10@eth0: <BROADCAST> mtu 1500', 'eth0')).toBe(false);
    expect(monitorLineConcerns('5: eth01: <BROADCAST> mtu 1500', 'eth0')).toBe(false);
    expect(monitorLineConcerns('3: eth1    inet 10.0.0.5/24', 'eth0')).toBe(false);
    expect(monitorLineConcerns('', 'eth0')).toBe(false);
  });

  it('one event per chunk that concerns the interface, lines split across chunks included', async () => {
    const s = setup();
    s.monitor.start();
    const child = s.children[0]!;
    child.stdout.write('3: eth1: <UP> mtu 1500\n');
    await flush();
    expect(s.events).toHaveLength(0);
    child.stdout.write('3: eth0: <NO-CARRIER> mtu 1500\n3: eth0    inet 10.0.0.5/24\n');
    await flush();
    expect(s.events).toHaveLength(1);
    child.stdout.write('Deleted 3: et');
    await flush();
    expect(s.events).toHaveLength(1);
    child.stdout.write('h0    inet 10.0.0.9/24\n');
    await flush();
    expect(s.events).toHaveLength(2);
    s.monitor.close();
  });

  it('a monitor that ends is started again after 1, 2, 4 s; close() kills it and ends the restarts', async () => {
    vi.useFakeTimers();
    const s = setup();
    s.monitor.start();
    s.children[0]!.emit('exit', 1, null);
    expect(s.warnings[0]).toMatchObject({ iface: 'eth0', detail: 'exit 1', retryInMs: 1000 });
    vi.advanceTimersByTime(999);
    expect(s.children).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(s.children).toHaveLength(2);
    s.children[1]!.emit('error', Object.assign(new Error('spawn ip ENOENT'), { code: 'ENOENT' }));
    s.children[1]!.emit('exit', -2, null); // after 'error', not a second restart
    expect(s.warnings.map((w) => w['retryInMs'])).toEqual([1000, 2000]);
    expect(s.warnings[1]).toMatchObject({ detail: 'ENOENT' });
    vi.advanceTimersByTime(2000);
    expect(s.children).toHaveLength(3);
    s.monitor.close();
    expect(s.children[2]!.killed).toBe('SIGTERM');
    vi.advanceTimersByTime(60_000);
    expect(s.children).toHaveLength(3);
    expect(s.warnings).toHaveLength(2); // its own kill is no failure
    s.monitor.close(); // idempotent
  });
});
