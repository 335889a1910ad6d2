// Drives the operations console in Debian's Chromium, as a manager would,
// on a system the demo day was played through (tests/console.rs starts it
// and passes what to expect in CONSOLE_EXPECT). Exits non-zero on the first
// check that fails, naming it; saves a screenshot of each page.
//
//   CONSOLE_URL          where the console serves (http://127.0.0.1:port)
//   CONSOLE_EXPECT       JSON: day, funnel {calls, transcribed, agreed,
//                        reminded, sms_delivered}, phone (to search),
//                        reminder (a pending reminder id to cancel),
//                        viewer_reminder (another, the viewer may not cancel),
//                        dead_letter {consumer, event_id}
//   SCREENSHOTS          directory for the screenshots
//   CHROMIUM             the browser (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const base = process.env.CONSOLE_URL;
const expect = JSON.parse(process.env.CONSOLE_EXPECT);
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function signIn(browser, name, password) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  check(page.url().includes('/login'), `${name}: an unsigned visit is sent to sign in`);
  await page.fill('input[name=username]', name);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);
  check((await page.textContent('[data-testid=who]')).includes(name), `${name}: signed in`);
  return page;
}

async function figure(page, stage) {
  return Number((await page.textContent(`[data-funnel=${stage}] .figure`)).trim());
}

/** Reloads `url` until `ready(page)` holds (the services work in the background). */
async function until(page, url, ready, what) {
  for (let i = 0; i < 120; i++) {
    await page.goto(url);
    if (await ready(page)) return;
    await page.waitForTimeout(500);
  }
  throw new Error(`check failed: ${what} (waited a minute)`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  // --- wrong password -------------------------------------------------------
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/login`);
    await page.fill('input[name=username]', 'operator');
    await page.fill('input[name=password]', 'not-the-password');
    await page.click('button[type=submit]');
    check((await page.textContent('[role=alert]')).includes('Wrong name or password'), 'a wrong password is refused');
    await page.screenshot({ path: `${shots}/login-refused.png` });
    await context.close();
  }

  const operator = await signIn(browser, 'operator', 'operator-dev-password');

  // --- overview: the funnel matches the read model --------------------------
  await operator.goto(`${base}/?day=${expect.day}`);
  for (const [stage, value] of Object.entries(expect.funnel)) {
    check((await figure(operator, stage)) === value, `overview: funnel ${stage} = ${value}`);
  }
  check(await operator.isVisible('svg[data-chart=funnel]'), 'overview: the funnel chart is drawn');
  await operator.screenshot({ path: `${shots}/overview.png`, fullPage: true });
  await operator.goto(`${base}/?day=${expect.leads_day}`);
  check(await operator.isVisible('svg[data-chart=leads]'), 'overview: leads by partner are charted');
  await operator.screenshot({ path: `${shots}/overview-leads.png`, fullPage: true });
  await operator.goto(`${base}/?day=${expect.inbound_day}`);
  check(await operator.isVisible('svg[data-chart=inbound]'), 'overview: inbound calls by outcome are charted');
  await operator.screenshot({ path: `${shots}/overview-inbound.png`, fullPage: true });

  // --- search → timeline with the consent evidence --------------------------
  await operator.goto(`${base}/search`);
  await operator.fill('input[name=q]', expect.phone);
  await Promise.all([operator.waitForURL(/\/(timeline|search)/), operator.click('form[role=search] button')]);
  if (operator.url().includes('/search')) {
    // The number had several flows: open the one that began with the call.
    await Promise.all([operator.waitForURL(/\/timeline\//), operator.click('a[href^="/timeline/"]')]);
  }
  check(await operator.isVisible('tr[data-type=ConsentAnalyzed]'), 'timeline: the consent decision is shown');
  const evidence = await operator.$$eval('[data-testid=evidence] mark', (marks) => marks.map((m) => m.textContent));
  check(evidence.length > 0, `timeline: the consent evidence is listed (${evidence.join(' | ')})`);
  const marked = await operator.$$eval('[data-testid=transcript] mark', (marks) => marks.map((m) => m.textContent));
  check(marked.length > 0, `timeline: the evidence is highlighted in the transcript (${marked.join(' | ')})`);
  check(await operator.isVisible('tr[data-type=SmsSent]'), 'timeline: the reminder SMS is in the same timeline');
  check((await operator.$$('a.trace')).length > 0, 'timeline: events link to their trace');
  await operator.screenshot({ path: `${shots}/timeline.png`, fullPage: true });

  // --- reminders: an operator cancels one ------------------------------------
  await operator.goto(`${base}/reminders?state=pending`);
  await operator.screenshot({ path: `${shots}/reminders.png`, fullPage: true });
  const row = `tr[data-reminder="${expect.reminder}"]`;
  check(await operator.isVisible(row), 'reminders: the pending reminder is listed');
  await operator.fill(`${row} input[name=reason]`, 'client asked by phone');
  await Promise.all([operator.waitForURL(/done=/), operator.click(`${row} button[data-action=cancel]`)]);
  check((await operator.textContent('[role=status]')).includes('cancelled'), 'reminders: the cancellation is confirmed');
  await operator.goto(`${base}/reminders?state=cancelled`);
  check(await operator.isVisible(`${row}[data-state=cancelled]`), 'reminders: the reminder now reads cancelled');

  // --- a viewer sees masked data and cannot cancel ---------------------------
  const viewer = await signIn(browser, 'viewer', 'viewer-dev-password');
  await viewer.goto(`${base}/reminders?state=pending`);
  const vrow = `tr[data-reminder="${expect.viewer_reminder}"]`;
  check(await viewer.isVisible(vrow), 'viewer: the pending reminder is listed');
  check((await viewer.$$(`${vrow} button[data-action=cancel]`)).length === 0, 'viewer: no cancel button');
  check(/\*\*\* \*\*/.test(await viewer.textContent(vrow)), 'viewer: the phone number is masked');
  await viewer.screenshot({ path: `${shots}/reminders-viewer.png`, fullPage: true });
  const refused = await viewer.evaluate(async (id) => {
    const r = await fetch(`/reminders/${id}/cancel`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'reason=viewer+tries',
    });
    return r.status;
  }, expect.viewer_reminder);
  check(refused === 403, `viewer: cancelling is refused (${refused})`);
  await viewer.goto(`${base}/reminders?state=pending`);
  check(await viewer.isVisible(`${vrow}[data-state=pending]`), 'viewer: the reminder is still pending');
  await viewer.goto(`${base}/search?q=${encodeURIComponent(expect.phone)}`);
  if (viewer.url().includes('/search')) await viewer.click('a[href^="/timeline/"]');
  await viewer.waitForURL(/\/timeline\//);
  const text = await viewer.textContent('main');
  check(!text.includes(expect.phone_e164) && text.includes('*** **'), 'viewer: the timeline masks the number');
  await viewer.screenshot({ path: `${shots}/timeline-viewer.png`, fullPage: true });

  // --- dead letters: retry one ----------------------------------------------
  const dl = `tr[data-dead-letter="${expect.dead_letter.event_id}"]`;
  await until(operator, `${base}/dead-letters`, (p) => p.isVisible(dl), 'dead letters: the parked message is listed');
  await operator.screenshot({ path: `${shots}/dead-letters.png`, fullPage: true });
  await Promise.all([operator.waitForURL(/done=/), operator.click(`${dl} button[data-action=retry]`)]);
  check((await operator.textContent('[role=status]')).includes('Retry'), 'dead letters: the retry is asked');
  await until(
    operator,
    `${base}/dead-letters?view=all`,
    async (p) => /retried|retry_failed/.test((await p.getAttribute(dl, 'data-state')) || ''),
    'dead letters: the consumer carried out the retry',
  );
  check((await operator.textContent(dl)).includes('by operator'), 'dead letters: the retry names the operator');
  await operator.screenshot({ path: `${shots}/dead-letters-retried.png`, fullPage: true });

  // --- manual queue and live events -----------------------------------------
  await operator.goto(`${base}/manual`);
  await operator.screenshot({ path: `${shots}/manual-queue.png`, fullPage: true });
  const lead = 'tr[data-lead]';
  if (await operator.isVisible(lead)) {
    const id = await operator.getAttribute(lead, 'data-lead');
    await operator.fill(`tr[data-lead="${id}"] input[name=note]`, 'created in the CRM by hand');
    await Promise.all([operator.waitForURL(/done=/), operator.click(`tr[data-lead="${id}"] button[data-action=handled]`)]);
    check(!(await operator.isVisible(`tr[data-lead="${id}"]`)), 'manual queue: the handled lead leaves the queue');
  }
  await operator.goto(`${base}/live`);
  await operator.waitForSelector('[data-testid=live-events] tr', { timeout: 30000 });
  check((await operator.$$('[data-testid=live-events] tr')).length > 0, 'live events: the tail shows events');
  await operator.screenshot({ path: `${shots}/live-events.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log('all browser checks passed');
