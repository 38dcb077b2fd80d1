import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CMD, untilExists, startDaemon, tempDir, type TestDaemon } from './helpers.js';

/** Debian's chromium, which .ci/run installs. */
const CHROMIUM = '/usr/bin/chromium';
/**
 * Headless, and kept off the network: every host name but the daemon's
 * resolves to nothing, and none of the browser's own services start.
 */
const CHROMIUM_FLAGS = [
  '--no-sandbox', // tests may run as root, where chromium's sandbox cannot start
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  '--proxy-server=direct://',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-default-apps',
  '--disable-domain-reliability',
  '--disable-sync',
  '--metrics-recording-only',
  '--no-first-run',
  '--no-pings',
];
/** Set to a path (docs/images/dashboard.png) to keep the screenshot the README shows. */
const SCREENSHOT = process.env.TASK_MANAGER_SCREENSHOT;

const dir = tempDir('tm-dashboard-');
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does`);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
});
afterAll(async () => {
  await browser?.close();
});

/** A page whose script errors fail the test. */
async function openPage(daemon: TestDaemon): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`http://127.0.0.1:${daemon.port}/`);
  return { page, errors };
}

/** The README's picture: tasks of every kind, a task's output, and charts with a few samples in them. */
async function takeScreenshot(page: Page, path: string): Promise<void> {
  await page.selectOption('#filter', '');
  const submit = (spec: Record<string, unknown>) => page.evaluate(`fetch('/tasks', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: ${JSON.stringify(JSON.stringify(spec))}})`);
  await submit({ id: 'nightly-backup', cmd: 'for i in 1 2 3 4 5 6; do echo "copied part $i of 6"; sleep 0.4; done' });
  await submit({ id: 'resize-images', cmd: 'echo resizing; sleep 60', priority: 5 });
  await submit({ id: 'flaky-upload', cmd: 'echo "upload failed: connection reset" >&2; exit 1' });
  await submit({ id: 'send-report', cmd: 'echo report sent', depends_on: ['nightly-backup'] });
  await submit({ id: 'cleanup', cmd: 'sleep 120', delay_ms: 600_000 });
  await page.setViewportSize({ width: 1400, height: 1000 });
  await row(page, 'nightly-backup').click();
  await page.waitForTimeout(6_000); // three samples of the machine
  mkdirSync(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: true });
  await page.evaluate(`fetch('/tasks/resize-images/cancel', {method: 'POST'})`);
  await page.evaluate(`fetch('/tasks/cleanup/cancel', {method: 'POST'})`);
}

const row = (page: Page, id: string) => page.locator(`.rows .row[data-id="${id}"]`);

describe('the dashboard in a browser', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    // An nvidia-smi of the test's own: one GPU at 35 % and one that reports no use.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'nvidia-smi'), '#!/bin/sh\necho "0, NVIDIA A100, 35, 1024, 40960"\necho "1, Tesla T4, [N/A], 0, 15360"\n');
    chmodSync(join(bin, 'nvidia-smi'), 0o755);
    daemon = await startDaemon([], { env: { PATH: `${bin}:${process.env.PATH}` } });
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });

  it('shows a task submitted over the line protocol within a second, and its output live', async () => {
    const { page, errors } = await openPage(daemon);
    await page.locator('#connection[data-state="live"]').waitFor();
    const gate = join(dir, 'gate');
    const client = await daemon.client();
    const submitted = Date.now();
    await client.submit({ id: 'from-the-line', cmd: `echo first; ${untilExists(gate)}; echo second` });
    await row(page, 'from-the-line').waitFor({ timeout: 10_000 });
    expect(Date.now() - submitted).toBeLessThan(1_000);
    await expect.poll(() => row(page, 'from-the-line').locator('.state').textContent()).toBe('RUNNING');

    await row(page, 'from-the-line').click();
    await expect.poll(() => page.locator('#stdout').textContent(), { timeout: 10_000 }).toBe('first\n');
    writeFileSync(gate, '');
    await expect.poll(() => page.locator('#stdout').textContent(), { timeout: 10_000 }).toBe('first\nsecond\n');
    await expect.poll(() => row(page, 'from-the-line').locator('.state').textContent(), { timeout: 10_000 }).toBe('COMPLETED');
    // Its times in the row: created, started and finished, none of them blank once it has finished.
    const times = await row(page, 'from-the-line').locator(':scope > span').allTextContents();
    expect(times.slice(-3)).toEqual([expect.stringMatching(/\d:\d\d/), expect.stringMatching(/\d:\d\d/), expect.stringMatching(/\d:\d\d/)]);
    await expect.poll(() => page.locator('.count[data-state="COMPLETED"] b').textContent()).toBe('1');
    expect(await page.locator('#gpu-now').textContent()).toBe('35 % of 2');
    await client.close();
    expect(errors).toEqual([]);
    await page.close();
  });

  it('submits a task from its form, cancels, restarts and removes it', async () => {
    const { page, errors } = await openPage(daemon);
    await page.locator('#connection[data-state="live"]').waitFor();
    // Found as a person (and a test written from the page) would: by label and by role, each exactly one.
    await page.getByLabel('Command').fill(`${CMD} --sleep 60000`);
    await page.getByLabel('Id').fill('from-the-form');
    await page.getByLabel('Timeout ms').fill('1.5');
    await page.getByRole('button', { name: 'Submit' }).click();
    await expect.poll(() => page.getByRole('alert').filter({ hasText: /./ }).textContent()).toMatch(/timeout_ms/);
    await page.getByLabel('Timeout ms').fill('');
    await page.getByLabel('Priority').fill('5');
    await page.getByRole('button', { name: 'Submit' }).click();
    await expect.poll(() => page.locator('#submit-result').textContent()).toBe('Submitted from-the-form');
    expect(await page.getByLabel('Id').inputValue()).toBe(''); // an id is taken once
    await expect.poll(() => row(page, 'from-the-form').locator('.state').textContent(), { timeout: 10_000 }).toBe('RUNNING');

    const client = await daemon.client();
    expect(await client.status('from-the-form')).toMatchObject({ state: 'RUNNING', priority: 5 });
    await page.getByRole('button', { name: 'Cancel' }).click();
    await expect.poll(() => row(page, 'from-the-form').locator('.state').textContent(), { timeout: 10_000 }).toBe('CANCELED');
    expect(await client.status('from-the-form')).toMatchObject({ state: 'CANCELED', error: { code: 'CANCELED' } });

    await page.click('#restart');
    await expect.poll(() => row(page, 'from-the-form').locator('.state').textContent(), { timeout: 10_000 }).toBe('RUNNING');
    expect(await client.status('from-the-form')).toMatchObject({ state: 'RUNNING', restarts: 1 });
    await page.getByRole('button', { name: 'Remove' }).click(); // at once: no dialog to answer
    await expect.poll(() => row(page, 'from-the-form').count(), { timeout: 10_000 }).toBe(0);
    await expect(client.status('from-the-form')).rejects.toMatchObject({ code: 'NOT_FOUND' });

    // Removed by another client: it leaves the page as well, without a reload.
    await client.run({ id: 'removed-elsewhere', cmd: 'true' });
    await row(page, 'removed-elsewhere').waitFor({ timeout: 10_000 });
    await client.remove('removed-elsewhere');
    await expect.poll(() => row(page, 'removed-elsewhere').count(), { timeout: 10_000 }).toBe(0);
    await client.close();

    // Filtering by state shows only those tasks.
    await page.selectOption('#filter', 'COMPLETED');
    await expect.poll(() => page.locator('.rows .row:not([hidden])').count()).toBe(1);
    if (SCREENSHOT) await takeScreenshot(page, SCREENSHOT);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('stays quick with 10,000 tasks: all counted, only the rows in view drawn', async () => {
    const many = await startDaemon(['--concurrency', '1', '--keep-finished', '20000', '--max-queue', '20000']);
    try {
      const client = await many.client();
      await client.submit({ id: 'blocker', cmd: [CMD, '--sleep', '60000'] });
      await Promise.all(Array.from({ length: 10_000 }, (_, i) => client.submit({ id: `queued-${i}`, cmd: ['true'] })));
      const { page, errors } = await openPage(many);
      const loaded = Date.now();
      await expect.poll(() => page.locator('.count[data-state="QUEUED"] b').textContent(), { timeout: 20_000 }).toBe('10,000');
      expect(Date.now() - loaded).toBeLessThan(10_000);
      expect(await page.locator('.rows .row').count()).toBeLessThan(40);
      await expect.poll(() => page.locator('.rows .row').first().getAttribute('data-id')).toBe('queued-9999'); // newest first
      await page.fill('#search', 'queued-42');
      await expect.poll(() => page.locator('#shown').textContent()).toBe('111 of 10,001');
      await client.cancel('blocker'); // a stop would otherwise wait for it through its grace period
      await client.close();
      expect(errors).toEqual([]);
      await page.close();
    } finally {
      await many.stop();
    }
  });
});

describe('the dashboard of a daemon with a token', () => {
  it('shows only its login until the token is given, then the tasks', async () => {
    const token = randomBytes(24).toString('base64url');
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, token);
    chmodSync(tokenFile, 0o600);
    const daemon = await startDaemon(['--token-file', tokenFile]);
    try {
      const { page, errors } = await openPage(daemon);
      await page.locator('#login').waitFor();
      expect(await page.locator('#main').isHidden()).toBe(true);
      await page.fill('#token', 'wrong');
      await page.click('#login button[type="submit"]');
      await expect.poll(() => page.locator('#login-error').textContent()).toBe('the token is wrong');
      await page.fill('#token', token);
      await page.click('#login button[type="submit"]');
      await page.locator('#connection[data-state="live"]').waitFor();
      expect(await page.locator('#login').isHidden()).toBe(true);
      // The cookie is for the server alone.
      expect(await page.evaluate('document.cookie')).toBe('');
      expect(errors).toEqual([]);
      await page.close();
    } finally {
      await daemon.stop();
    }
  });
});
