/// <reference lib="dom" />
/**
 * The status page of a REAL running mqtt-lb (the built CLI) in front of two real mosquitto brokers, in
 * Debian's Chromium: it renders the LB's servers and sessions, follows a broker killed during the test,
 * and its drain button (with `admin.token` set in lb.yaml, so the page asks for it) changes the LB.
 * status-page.test.ts covers the page's details against an in-process admin server.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backgroundOf, launchChromium, openWatchedPage, type WatchedPage } from '../helpers/browser.js';
import { connectVia, startBrokers, whichBroker, type NamedBroker } from '../helpers/cluster.js';
import { lbYaml, type HealthSpec } from '../helpers/lb-config.js';
import { sleep, startLb, stopAllLbs, type LbProcess } from '../helpers/lb.js';
import { freePort } from '../helpers/mosquitto.js';

const TOKEN = 'lb-status-page-token';
/** The page polls every 2 s; the LB probes every 300 ms with fall 2: "a few seconds", bounded. */
const WAIT_MS = 8_000;
const RED = 'rgb(207, 34, 46)';
const GREEN = 'rgb(26, 127, 55)';
const AMBER = 'rgb(154, 103, 0)';

let browser: Browser;
let brokers: NamedBroker[] = [];
let lb: LbProcess;
let port: number;
let adminUrl: string;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  brokers = await startBrokers(['b1', 'b2']);
  port = await freePort();
  const admin = await freePort();
  adminUrl = `http://127.0.0.1:${admin}`;
  const health: HealthSpec = { type: 'mqtt', interval: '300ms', timeout: '250ms', rise: 1, fall: 2 };
  lb = await startLb(lbYaml({ port, admin, servers: brokers, health, adminToken: TOKEN }), { waitReady: `${adminUrl}/readyz` });
  browser = await launchChromium();
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

afterAll(async () => {
  await browser?.close();
  await stopAllLbs();
  await Promise.all(brokers.map((b) => b.stop()));
});

/** A fresh page on the LB's status page, closed after the test; prompts are answered from `answers`, in order. */
async function openPage(answers: string[]): Promise<WatchedPage> {
  const w = await openWatchedPage(browser, `${adminUrl}/`, answers);
  cleanups.push(() => w.context.close());
  return w;
}

const row = (server: string): string => `tr[data-server="brokers/${server}"]`;
const field = (server: string, name: string): string => `${row(server)} td[data-field="${name}"]`;
const pill = (server: string): string => `${field(server, 'state')} .pill`;

async function waitForText(page: Page, selector: string, want: string): Promise<void> {
  await page.waitForFunction(([sel, text]) => document.querySelector(sel!)?.textContent === text, [selector, want] as const, { timeout: WAIT_MS });
}

interface StatusServer {
  name: string;
  state: string;
  admin: string;
  sessions: number;
}

async function statusServers(): Promise<StatusServer[]> {
  const r = await fetch(`${adminUrl}/api/status`, { signal: AbortSignal.timeout(5000) });
  const s = (await r.json()) as { pools: Array<{ servers: StatusServer[] }> };
  return s.pools[0]!.servers;
}

describe('status page of a running mqtt-lb', () => {
  it('renders the LB, follows a killed broker, and drains a server through the token prompt', async () => {
    const w = await openPage([TOKEN]);
    const { page } = w;

    // The servers of the running LB, as the LB sees them.
    await waitForText(page, pill('b1'), 'up');
    await waitForText(page, pill('b2'), 'up');
    for (const b of brokers) expect(await page.textContent(field(b.name, 'address'))).toBe(`127.0.0.1:${b.port}`);
    expect(await backgroundOf(page, pill('b1'))).toBe(GREEN);
    expect(await page.textContent('#role')).toBe('standalone');
    expect(await page.textContent('#version')).toMatch(/^v\d+\.\d+\.\d+/);
    expect(await page.textContent('section.pool[data-pool="brokers"] small')).toBe('client-id-hash · 2/2 up');
    expect(await page.textContent(field('b1', 'last-check'))).toMatch(/^ok \(\d+ ms\) /);

    // A real client through the LB shows up as a session on its broker and on the listener.
    const client = await connectVia(port, { clientId: 'status-page-client', keepalive: 0 });
    client.on('error', () => undefined); // its broker may be the one killed below
    cleanups.push(() => client.endAsync(true));
    const home = await whichBroker(client);
    await waitForText(page, field(home, 'sessions'), '1');
    await waitForText(page, '#listeners tbody tr td:nth-child(4)', '1');
    expect(await page.textContent('#listeners tbody tr')).toBe(`mqtt127.0.0.1:${port}no1`);

    // A broker dies during the test: the page turns it down by itself, within a few seconds.
    brokers.find((b) => b.name === 'b2')!.kill('SIGKILL');
    await waitForText(page, pill('b2'), 'down');
    expect(await backgroundOf(page, pill('b2'))).toBe(RED);
    await waitForText(page, 'section.pool[data-pool="brokers"] small', 'client-id-hash · 1/2 up');
    expect(await page.textContent(field('b2', 'last-check'))).toMatch(/^refused /);

    // The LB enforces the token configured in lb.yaml: a request without it changes nothing.
    const unauth = await fetch(`${adminUrl}/api/servers/brokers/b1/drain`, { method: 'POST', signal: AbortSignal.timeout(5000) });
    expect(unauth.status).toBe(401);
    expect((await statusServers()).find((s) => s.name === 'b1')!.admin).toBe('ready');

    // Drain b1 from the page: it asks for the token (once), the LB applies it, the page shows it.
    expect(await page.isDisabled(`${row('b1')} button[data-action="ready"]`)).toBe(true);
    await page.click(`${row('b1')} button[data-action="drain"]`);
    await waitForText(page, pill('b1'), 'drain');
    expect(w.prompts).toHaveLength(1);
    expect(w.prompts[0]).toMatch(/^prompt: Admin token \(admin\.token in lb\.yaml\)/);
    expect(await page.textContent('#msg')).toBe('brokers/b1: drain');
    expect(await backgroundOf(page, pill('b1'))).toBe(AMBER);
    expect(await page.textContent(field('b1', 'admin'))).toBe('drain');
    const b1 = (await statusServers()).find((s) => s.name === 'b1')!;
    expect(b1).toMatchObject({ admin: 'drain', state: 'drain' });
    // Audited once, with the caller's address.
    const audit = lb.logs.filter((l) => l.msg === 'admin request applied' && l.server === 'b1' && l.action === 'drain');
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ component: 'admin', pool: 'brokers', from: '127.0.0.1' });

    // And back to ready, with the remembered token: no second prompt.
    await page.click(`${row('b1')} button[data-action="ready"]`);
    await waitForText(page, pill('b1'), 'up');
    expect((await statusServers()).find((s) => s.name === 'b1')!.admin).toBe('ready');
    expect(w.prompts).toHaveLength(1);

    await sleep(100);
    expect(w.pageErrors).toEqual([]);
    expect(w.consoleErrors).toEqual([]);
  }, 60_000);
});
