/**
 * The session pages in a real browser (Debian's chromium, headless, driven by playwright-core) while
 * a real session runs behind the standalone service (test/ui/ui-harness.ts): what a person watching
 * would check. Screenshots of both pages go to test-output/ui/ (TEST_OUTPUT_DIR overrides).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { startUiScenario, type UiScenario } from "./ui-harness.js";
import { waitFor } from "../infra/wait-for.js";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const OUTPUT_DIR = path.resolve(process.env.TEST_OUTPUT_DIR ?? "test-output", "ui");
const TOKEN = "ui-test-token-0123456789abcdef";

const skip = existsSync(CHROMIUM)
  ? false
  : `no ${CHROMIUM} (npm run setup:system installs Debian's chromium)`;

describe("session pages in a real browser", { skip, timeout: 180_000 }, () => {
  let scenario: UiScenario;
  let browser: Browser;
  let page: Page;

  before(async () => {
    mkdirSync(OUTPUT_DIR, { recursive: true });
    scenario = await startUiScenario({ seconds: 90, apiToken: TOKEN, peerMode: "filter", audio: "aac" });
    // As root, Chromium refuses to start with its sandbox; the test's network namespace holds only lo.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  });

  after(async () => {
    await browser?.close();
    await scenario?.stop();
  });

  it("lists the running session in the overview, with its phase and a link to its page", async () => {
    await page.goto(`${scenario.baseUrl}/ui/`);
    const row = page.locator(`tr[data-session="${scenario.sessionId}"]`);
    await row.waitFor({ timeout: 10_000 });
    assert.match(await row.innerText(), /running|connecting/);
    assert.equal(await row.locator("td.audio").innerText(), "passthrough (aac → aac)");
    // Listed sessions get thumbnails too (the overview polls every 2 s).
    await row.locator("img").waitFor({ timeout: 15_000 });
    // The phase filter keeps the row under its own phase (no other phase is offered while one runs).
    const phase = await row.locator(".phase").innerText();
    await page.selectOption("#filter-phase", phase);
    assert.equal(await row.count(), 1);
    await page.selectOption("#filter-phase", "");
    await page.screenshot({ path: path.join(OUTPUT_DIR, "overview.png"), fullPage: true });
  });

  it("shows the session live: state, thumbnails that change, graphs that get new points", async () => {
    await page.click(`a[href="#/session/${scenario.sessionId}"]`);
    await page.locator("#facts").getByText("connected").waitFor({ timeout: 10_000 });
    const sequence = (side: string) => page.getAttribute(`#thumb-${side}`, "data-sequence");
    await waitFor(async () => (await sequence("output")) !== null, 15_000, "a first output thumbnail");
    const first = { input: await sequence("input"), output: await sequence("output") };
    const points = async () => Number(await page.getAttribute(".graph .uplot", "data-points"));
    const pointsBefore = await points();
    await waitFor(
      async () => (await sequence("output")) !== first.output && (await sequence("input")) !== first.input,
      15_000,
      "both thumbnails to change",
    );
    await waitFor(async () => (await points()) >= pointsBefore + 2, 10_000, "new points on the graphs");
    // The browser's own element type (HTMLImageElement) is not in this Node program's types.
    const size = await page.$eval("#thumb-output", (img) => {
      const { naturalWidth, naturalHeight } = img as unknown as {
        naturalWidth: number;
        naturalHeight: number;
      };
      return { w: naturalWidth, h: naturalHeight };
    });
    assert.ok(size.w > 0 && size.h > 0, `the output thumbnail decodes as an image (${size.w}x${size.h})`);
  });

  it("shows the audio: mode, codecs in and out, why, and frames that keep coming", async () => {
    assert.equal(await page.innerText("#fact-audio"), "passthrough (aac → aac)");
    const status = scenario.sessions.get(scenario.sessionId)!.status();
    assert.equal(await page.innerText("#fact-audio-reason"), status.audio.reason);
    const framesIn = async () => Number((await page.innerText("#fact-audio-frames")).split(" / ")[0]);
    const before = await framesIn();
    await waitFor(async () => (await framesIn()) > before, 5000, "audio frames in to grow");
    assert.match(await page.innerText("#fact-audio-queue"), /^\d+ of \d+ \/ /);
  });

  it("refuses a prompt edit and a stop without the token, and says so in place", async () => {
    const updatesBefore = scenario.peer.stats().promptUpdates;
    await page.fill("#prompts", JSON.stringify([{ "1": { class_type: "LoadTensor", inputs: {} } }]));
    await page.click("#apply-prompts");
    await page
      .locator("#prompts-result")
      .getByText(/refused/)
      .waitFor({ timeout: 5000 });
    assert.match(await page.innerText("#prompts-result"), /authentication required/);
    page.once("dialog", (dialog) => void dialog.accept());
    await page.click("#stop");
    await page
      .locator("#stop-result")
      .getByText(/refused/)
      .waitFor({ timeout: 5000 });
    assert.equal(scenario.sessions.get(scenario.sessionId)!.status().state, "running");
    assert.equal(scenario.peer.stats().promptUpdates, updatesBefore, "no update reached the peer");
  });

  it("shows an invalid prompt's error from the server, word for word as the REST API gives it", async () => {
    await page.fill("#token", TOKEN);
    await page.press("#token", "Enter");
    await page.locator("#access").getByText("token accepted").waitFor({ timeout: 5000 });
    await page.fill("#prompts", "42");
    await page.click("#apply-prompts");
    await page.locator("#prompts-result.error").waitFor({ timeout: 5000 });
    const rest = await scenario.app.inject({
      method: "POST",
      url: `/session/${scenario.sessionId}/prompts`,
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: { prompts: 42 },
    });
    assert.equal(rest.statusCode, 400);
    const message = (rest.json() as { error: string }).error;
    assert.equal(await page.innerText("#prompts-result"), `refused: ${message}`);
    assert.equal(await page.getAttribute("#prompts", "aria-invalid"), "true");
  });

  it("applies a prompt edit live: it reaches the ComfyStream peer", async () => {
    const updatesBefore = scenario.peer.stats().promptUpdates;
    const edited = [
      { "1": { class_type: "LoadTensor", inputs: {} }, "2": { class_type: "SaveTensor", inputs: {} } },
    ];
    await page.fill("#prompts", JSON.stringify(edited, null, 2));
    await page.click("#apply-prompts");
    await page.locator("#prompts-result").getByText("applied").waitFor({ timeout: 10_000 });
    assert.equal(scenario.peer.stats().promptUpdates, updatesBefore + 1);
    // Every control has a name a screen reader says (a <label for>, or aria-label), and the
    // controls are reachable with the keyboard (none is taken out of the tab order).
    const unnamed = await page.evaluate(`[...document.querySelectorAll("input, select, textarea, button")]
      .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !c.textContent.trim())
      .map((c) => c.outerHTML)`);
    assert.deepEqual(unnamed, []);
    assert.equal(await page.locator("[tabindex='-1']:not(main)").count(), 0);
    await page.focus("#prompts");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate("document.activeElement.id"), "apply-prompts");
    await page.waitForTimeout(1500); // a tick or two more on the graphs for the screenshot
    await page.screenshot({ path: path.join(OUTPUT_DIR, "session.png"), fullPage: true });
    const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
    await phone.goto(`${scenario.baseUrl}/ui/#/session/${scenario.sessionId}`);
    await phone.locator("#facts").getByText("connected").waitFor({ timeout: 10_000 });
    const overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth");
    assert.ok((overflow as number) <= 1, `nothing wider than a phone screen (${overflow} px too wide)`);
    await phone.screenshot({ path: path.join(OUTPUT_DIR, "session-phone.png"), fullPage: true });
    await phone.close();
  });

  it("stops the session after confirmation when the token is given", async () => {
    let asked = "";
    page.once("dialog", (dialog) => {
      asked = dialog.message();
      void dialog.accept();
    });
    await page.click("#stop");
    await page.locator("#stop-result").getByText("stopped").waitFor({ timeout: 10_000 });
    assert.match(asked, /Stop session watched\?/);
    assert.equal(scenario.sessions.get(scenario.sessionId)!.status().state, "stopped");
  });
});
