/// <reference lib="dom" />
/**
 * The status page in a real Chromium: it follows live server state, drives the admin API (asking for
 * the token), stays readable on a phone, and logs nothing to the console.
 * The AdminServer runs in-process with real `Server` objects whose state the test changes.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from '../../src/balancer/server.js';
import { AdminServer } from '../../src/telemetry/admin-server.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import { backgroundOf, launchChromium, openWatchedPage, type WatchedPage } from '../helpers/browser.js';
import {
  FakeSession,
  FakeSource,
  RecordingActions,
  adminConfig,
  failoverStatus,
  listenerStats,
  makeServer,
  silentLogger,
} from '../unit/telemetry-fixtures.js';

const TOKEN = 'page-test-token';
const WAIT_MS = 8_000; // the page refreshes every 2 s

let browser: Browser;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

interface Setup {
  admin: AdminServer;
  source: FakeSource;
  actions: RecordingActions;
  url: string;
  servers: Record<'b1' | 'b2' | 'b3', Server>;
}

async function startAdmin(token: string | null): Promise<Setup> {
  const source = new FakeSource();
  source.version = '0.1.0';
  source.listenerList = [listenerStats('mqtt', { active: 6 }), listenerStats('mqtts', { bind: '0.0.0.0:8883', tls: true, active: 1 })];
  const b1 = makeServer('brokers', 'b1', 'up');
  const b2 = makeServer('brokers', 'b2', 'up');
  const b3 = makeServer('brokers', 'b3', 'unknown', { backup: true });
  for (let i = 0; i < 5; i++) b1.sessions.add(new FakeSession(10, 10));
  b1.lastCheck = { result: 'ok', at: Date.now(), durationMs: 2 };
  b2.lastCheck = { result: 'ok', at: Date.now(), durationMs: 4 };
  source.poolList = [{ name: 'brokers', balance: 'client-id-hash', servers: [b1, b2, b3] }];
  source.failoverStatus = failoverStatus('master');
  const metrics = new Metrics(source);
  const actions = new RecordingActions(source);
  const admin = new AdminServer({ config: adminConfig(token), source, actions, metrics, log: silentLogger() });
  cleanups.push(() => metrics.close());
  cleanups.push(() => admin.close());
  await admin.listen();
  return { admin, source, actions, url: `http://127.0.0.1:${admin.port}/`, servers: { b1, b2, b3 } };
}

/** A fresh page on `url`, closed after the test; prompts are answered from `answers`, in order. */
async function openPage(url: string, answers: string[] = []): Promise<WatchedPage> {
  const w = await openWatchedPage(browser, url, answers);
  cleanups.push(() => w.context.close());
  return w;
}

const row = (server: string): string => `tr[data-server="brokers/${server}"]`;
const pill = (server: string): string => `${row(server)} td[data-field="state"] .pill`;

async function waitForState(page: Page, server: string, state: string): Promise<void> {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel!)?.textContent === want,
    [pill(server), state] as const,
    { timeout: WAIT_MS },
  );
}

const GREEN = 'rgb(26, 127, 55)';
const RED = 'rgb(207, 34, 46)';
const AMBER = 'rgb(154, 103, 0)';
const GREY = 'rgb(110, 119, 129)';

describe('status page', () => {
  it('shows live state, asks for the token once, drives the admin API, and logs no errors', async () => {
    const { actions, url, servers, source } = await startAdmin(TOKEN);
    const w = await openPage(url, [TOKEN]);
    const { page } = w;

    await waitForState(page, 'b1', 'up');
    expect(await page.textContent('#role')).toBe('master');
    expect(await page.textContent('#version')).toBe('v0.1.0');
    expect(await backgroundOf(page, pill('b1'))).toBe(GREEN);
    expect(await backgroundOf(page, pill('b3'))).toBe(GREY);
    expect(await page.textContent(`${row('b1')} td[data-field="sessions"]`)).toBe('5');
    expect(await page.textContent(`${row('b1')} td[data-field="last-check"]`)).toMatch(/^ok \(2 ms\) (\d+ ms|\d+(\.\d)? s) ago$/);
    expect(await page.textContent(`${row('b3')} td[data-field="server"]`)).toBe('b3 (backup)');
    expect(await page.textContent(`${row('b3')} td[data-field="last-check"]`)).toBe('never');
    expect(await page.$$eval('#listeners tbody tr', (trs) => trs.map((t) => t.textContent))).toEqual(['mqtt0.0.0.0:1883no6', 'mqtts0.0.0.0:8883yes1']);
    expect(await page.textContent('#failover tbody')).toContain('192.0.2.10/24');
    expect(await page.textContent('#ready')).toBe('ready');
    expect(await backgroundOf(page, '#ready')).toBe(GREEN);

    // Not ready (a stop under way): /readyz's reason is in the header.
    source.readiness = { ok: false, reason: 'stopping' };
    await page.waitForFunction(() => document.querySelector('#ready')?.textContent === 'not ready', undefined, { timeout: WAIT_MS });
    expect(await page.textContent('#unready')).toBe('stopping');
    expect(await backgroundOf(page, '#ready')).toBe(RED);
    source.readiness = { ok: true };
    await page.waitForFunction(() => document.querySelector('#ready')?.textContent === 'ready', undefined, { timeout: WAIT_MS });
    expect(await page.textContent('#unready')).toBe('');

    // A server goes down: the page follows by itself.
    servers.b2.setHealth('down');
    await waitForState(page, 'b2', 'down');
    expect(await backgroundOf(page, pill('b2'))).toBe(RED);

    // Drain b1: the page asks for the token (once), the action reaches the app, the page shows it.
    expect(await page.isDisabled(`${row('b1')} button[data-action="ready"]`)).toBe(true);
    await page.click(`${row('b1')} button[data-action="drain"]`);
    await waitForState(page, 'b1', 'drain');
    expect(actions.calls).toEqual([{ pool: 'brokers', server: 'b1', state: 'drain' }]);
    expect(w.prompts).toHaveLength(1);
    expect(w.prompts[0]).toMatch(/^prompt: Admin token/);
    expect(await backgroundOf(page, pill('b1'))).toBe(AMBER);
    expect(await page.textContent('#msg')).toBe('brokers/b1: drain');

    // The token is remembered for the session: no second prompt.
    await page.click(`${row('b1')} button[data-action="maint"]`);
    await waitForState(page, 'b1', 'maint');
    await page.click(`${row('b1')} button[data-action="ready"]`);
    await waitForState(page, 'b1', 'up');
    expect(actions.calls.map((c) => c.state)).toEqual(['drain', 'maint', 'ready']);
    expect(w.prompts).toHaveLength(1);

    // A reload removes b3: its row goes away.
    source.poolList[0]!.servers = [servers.b1, servers.b2];
    await page.waitForSelector(row('b3'), { state: 'detached', timeout: WAIT_MS });

    // On a phone: tables become cards and nothing overflows sideways.
    await page.setViewportSize({ width: 375, height: 800 });
    expect(await page.$eval('#pools thead', (e) => getComputedStyle(e).display)).toBe('none');
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
    const buttonBox = await page.locator(`${row('b1')} button[data-action="drain"]`).boundingBox();
    expect(buttonBox!.height).toBeGreaterThanOrEqual(36); // a finger can hit it

    const dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-status-page-'));
    try {
      const file = join(dir, 'status.png');
      await page.screenshot({ path: file, fullPage: true });
      expect(statSync(file).size).toBeGreaterThan(1000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    expect(w.pageErrors).toEqual([]);
    expect(w.consoleErrors).toEqual([]);
  }, 60_000);

  it('asks again when the API answers 401 for a wrong token', async () => {
    const { actions, url } = await startAdmin(TOKEN);
    const w = await openPage(url, ['wrong-token', TOKEN]);
    await waitForState(w.page, 'b2', 'up');
    await w.page.click(`${row('b2')} button[data-action="maint"]`);
    await waitForState(w.page, 'b2', 'maint');
    expect(actions.calls).toEqual([{ pool: 'brokers', server: 'b2', state: 'maint' }]);
    expect(w.prompts).toHaveLength(2);
    expect(w.pageErrors).toEqual([]);
    // The browser itself reports the refused request; nothing else may appear.
    expect(w.consoleErrors.length).toBeGreaterThan(0);
    for (const e of w.consoleErrors) expect(e).toMatch(/status of 401/);
  }, 60_000);

  it('forgets a token refused twice: the next action asks first, with no third 401', async () => {
    const { actions, url } = await startAdmin(TOKEN);
    const w = await openPage(url, ['wrong-1', 'wrong-2', TOKEN]);
    await waitForState(w.page, 'b2', 'up');
    await w.page.click(`${row('b2')} button[data-action="maint"]`);
    await w.page.waitForFunction(() => /failed: HTTP 401/.test(document.getElementById('msg')?.textContent ?? ''), undefined, { timeout: WAIT_MS });
    expect(actions.calls).toEqual([]);
    await w.page.click(`${row('b2')} button[data-action="maint"]`);
    await waitForState(w.page, 'b2', 'maint');
    expect(actions.calls).toEqual([{ pool: 'brokers', server: 'b2', state: 'maint' }]);
    expect(w.prompts).toHaveLength(3);
    // One 401 for each wrong token; the second (kept before) was not sent again.
    expect(w.consoleErrors.filter((e) => /status of 401/.test(e))).toHaveLength(2);
  }, 60_000);

  it('reports a refused action and changes nothing when no token is given', async () => {
    const { actions, url } = await startAdmin(TOKEN);
    const w = await openPage(url, []); // every prompt dismissed
    await waitForState(w.page, 'b1', 'up');
    await w.page.click(`${row('b1')} button[data-action="drain"]`);
    await w.page.waitForFunction(() => document.getElementById('msg')?.textContent === 'no token given, nothing changed', undefined, {
      timeout: WAIT_MS,
    });
    expect(actions.calls).toEqual([]);
    expect(w.consoleErrors).toEqual([]);
  }, 60_000);

  it('needs no token on a loopback bind without admin.token, and shows when mqtt-lb is unreachable', async () => {
    const { admin, actions, url } = await startAdmin(null);
    const w = await openPage(url);
    await waitForState(w.page, 'b1', 'up');
    await w.page.click(`${row('b1')} button[data-action="drain"]`);
    await waitForState(w.page, 'b1', 'drain');
    expect(actions.calls).toEqual([{ pool: 'brokers', server: 'b1', state: 'drain' }]);
    expect(w.prompts).toEqual([]);
    expect(w.consoleErrors).toEqual([]);
    expect(await w.page.isVisible('#ready')).toBe(true);

    // The admin server goes away: the page says so and keeps the last data, but no stale "ready".
    await admin.close();
    await w.page.waitForFunction(() => document.getElementById('conn')?.className === 'bad', undefined, { timeout: WAIT_MS });
    expect(await w.page.textContent('#conn')).toMatch(/^cannot reach mqtt-lb/);
    expect(await w.page.isVisible('#ready')).toBe(false);
    expect(await w.page.textContent(pill('b1'))).toBe('drain');
    // The frozen data (its ages included) is shown dimmed, the banner in full.
    expect(await w.page.evaluate(() => getComputedStyle(document.querySelector('main')!).opacity)).toBe('0.5');
    expect(await w.page.evaluate(() => getComputedStyle(document.getElementById('conn')!).opacity)).toBe('1');
  }, 60_000);

  it('names that are Object.prototype properties (constructor, toString, valueOf) render and act like any other', async () => {
    const { source, actions, url } = await startAdmin(null);
    const servers = [makeServer('constructor', 'toString', 'up'), makeServer('constructor', 'valueOf', 'down'), makeServer('constructor', 'hasOwnProperty', 'up')];
    source.poolList = [{ name: 'constructor', balance: 'client-id-hash', servers }];
    source.listenerList = [listenerStats('constructor', { active: 2 }), listenerStats('toString', { bind: '0.0.0.0:1884' })];
    const w = await openPage(url);
    const cell = (server: string): string => `tr[data-server="constructor/${server}"] td[data-field="state"] .pill`;
    await w.page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'up', cell('toString'), { timeout: WAIT_MS });
    expect(await w.page.textContent(cell('valueOf'))).toBe('down');
    expect(await w.page.textContent(cell('hasOwnProperty'))).toBe('up');
    expect(await w.page.$$eval('#listeners tbody tr', (trs) => trs.map((t) => t.textContent))).toEqual(['constructor0.0.0.0:1883no2', 'toString0.0.0.0:1884no0']);
    // Refreshes reconcile the same rows (no duplicates), and the buttons work.
    servers[1]!.setHealth('up');
    await w.page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'up', cell('valueOf'), { timeout: WAIT_MS });
    expect(await w.page.$$eval('#pools tbody tr', (trs) => trs.length)).toBe(3);
    await w.page.click('tr[data-server="constructor/toString"] button[data-action="drain"]');
    await w.page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'drain', cell('toString'), { timeout: WAIT_MS });
    expect(actions.calls).toEqual([{ pool: 'constructor', server: 'toString', state: 'drain' }]);
    expect(await w.page.getAttribute('#conn', 'class')).toBe('muted');
    expect(w.pageErrors).toEqual([]);
    expect(w.consoleErrors).toEqual([]);
  }, 60_000);
});
