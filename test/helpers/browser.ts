/// <reference lib="dom" />
/**
 * Debian's Chromium driven by playwright-core for the status-page tests: one launch with the same flags
 * everywhere, and pages that record what the page logs and the prompts it shows.
 */
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/** Headless Chromium from the system package, without background traffic (no sync, updates, first-run UI). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

export interface WatchedPage {
  /** Close it when the test is done (closing the browser closes it too). */
  context: BrowserContext;
  page: Page;
  /** Console errors and warnings. */
  consoleErrors: string[];
  /** Uncaught exceptions in the page. */
  pageErrors: string[];
  /** `type: message` of every dialog shown. */
  prompts: string[];
}

/**
 * Opens `url` in a fresh context (fresh sessionStorage), light colours, 1200×900. Prompts are answered from
 * `answers`, in order; other dialogs, and prompts once `answers` is empty, are dismissed.
 */
export async function openWatchedPage(browser: Browser, url: string, answers: string[] = []): Promise<WatchedPage> {
  const context = await browser.newContext({ colorScheme: 'light', viewport: { width: 1200, height: 900 } });
  try {
    const page = await context.newPage();
    const w: WatchedPage = { context, page, consoleErrors: [], pageErrors: [], prompts: [] };
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') w.consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => w.pageErrors.push(e.message));
    page.on('dialog', (d) => {
      w.prompts.push(`${d.type()}: ${d.message()}`);
      const answer = answers.shift();
      void (d.type() === 'prompt' && answer !== undefined ? d.accept(answer) : d.dismiss());
    });
    await page.goto(url);
    return w;
  } catch (err) {
    await context.close();
    throw err;
  }
}

/** The computed background colour of the first element matching `selector` (`rgb(r, g, b)`). */
export function backgroundOf(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (e) => getComputedStyle(e).backgroundColor);
}
