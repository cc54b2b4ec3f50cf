// tests/web/page.test.js - the web page in a real browser (Debian's chromium, headless, driven
// by playwright-core). Run by tests/e2e_web.sh, which starts the server and sets:
//   SL_URL        base URL of the server          SL_PHOTO   a shopper photo (JPEG)
//   SL_EXPECT     product id the photo shows      SL_ARTIFACTS  directory for screenshots
// Checks, on a desktop and a phone-sized viewport: categories load into the filter, uploading
// the photo (file picker, drag-and-drop, paste) shows results with the right product first,
// cards show title/price/category/score and a thumbnail, "Similar" works, filters apply, errors
// are shown in words, and the page loads nothing from anywhere but the server.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const url = process.env.SL_URL;
const photo = process.env.SL_PHOTO;
const expected = process.env.SL_EXPECT;
const artifacts = process.env.SL_ARTIFACTS || "build/test-artifacts";

function check(cond, msg) { if (!cond) throw new Error(msg); }

async function firstCard(page) {
  await page.waitForSelector("#results li.card", { timeout: 30000 });
  return page.$eval("#results li.card", (li) => ({
    id: li.dataset.productId,
    title: li.querySelector(".title").textContent,
    price: li.querySelector(".price").textContent,
    category: li.querySelector(".category").textContent,
    score: li.querySelector(".score").textContent,
    img: li.querySelector("img").naturalWidth,
  }));
}

async function resetResults(page) {
  await page.evaluate(() => { document.getElementById("results").textContent = ""; });
}

async function run(browser, name, contextOpts) {
  const context = await browser.newContext(contextOpts);
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push("console: " + m.text()); });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(url) && !u.startsWith("blob:") && !u.startsWith("data:")) problems.push("external request: " + u);
  });
  await page.goto(url + "/");
  await page.waitForFunction(() => document.querySelectorAll("#category option").length > 1, null, { timeout: 15000 });
  const cats = await page.$$eval("#category option", (os) => os.map((o) => o.value).filter(Boolean));
  check(cats.length > 1, name + ": categories not loaded");

  // 1. file picker
  await page.setInputFiles("#file", photo);
  let c = await firstCard(page);
  check(c.id === expected, `${name}: first result is ${c.id}, expected ${expected}`);
  check(c.title.length > 0 && /^\d+\.\d\d$/.test(c.price) && c.category.length > 0 && /^score \d/.test(c.score),
        `${name}: card fields missing: ${JSON.stringify(c)}`);
  await page.waitForFunction(() => { const i = document.querySelector("#results li.card img"); return i && i.complete && i.naturalWidth > 0; },
                             null, { timeout: 15000 });
  await page.waitForSelector("#preview", { state: "visible", timeout: 5000 });
  await page.screenshot({ path: path.join(artifacts, `web-${name}.png`), fullPage: true });

  // 2. drag and drop, 3. paste: the same photo through the other two ways in
  const bytes = fs.readFileSync(photo).toString("base64");
  for (const how of ["drop", "paste"]) {
    await resetResults(page);
    await page.evaluate(([b64, how]) => {
      const bin = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bin], "photo.jpg", { type: "image/jpeg" }));
      if (how === "drop") document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
      else document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
    }, [bytes, how]);
    c = await firstCard(page);
    check(c.id === expected, `${name}: ${how}: first result is ${c.id}, expected ${expected}`);
  }

  // 4. a category filter: every result is in it
  const want = c.category;
  await page.selectOption("#category", want);
  await resetResults(page);
  await page.click("#search");
  await firstCard(page);
  const catsShown = await page.$$eval("#results .category", (ns) => ns.map((n) => n.textContent));
  check(catsShown.every((x) => x === want), `${name}: category filter leaked: ${catsShown}`);
  await page.click("#clear");

  // 5. similar
  await page.waitForSelector("#results li.card button.similar");
  await resetResults(page);
  await page.evaluate(() => 0);
  await page.setInputFiles("#file", photo);
  await firstCard(page);
  await page.click("#results li.card button.similar");
  await page.waitForFunction(() => /^Similar to/.test(document.getElementById("status").textContent), null, { timeout: 15000 });
  const simIds = await page.$$eval("#results li.card", (ls) => ls.map((l) => l.dataset.productId));
  check(simIds.length > 0 && !simIds.includes(expected), `${name}: similar list ${simIds}`);

  // 6. errors in words: not an image (client side) and an undecodable image (server side)
  await page.setInputFiles("#file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello") });
  await page.waitForSelector("#error.show");
  check(/not an image/.test(await page.textContent("#error")), name + ": no message for a text file");
  await page.setInputFiles("#file", { name: "broken.jpg", mimeType: "image/jpeg", buffer: Buffer.from("\xff\xd8\xff\xe0broken", "latin1") });
  await page.waitForFunction(() => /photo|image|read|decode|corrupt|JPEG|not accepted/i.test(document.getElementById("error").textContent) &&
                                   document.getElementById("error").classList.contains("show"), null, { timeout: 15000 });
  const err = await page.textContent("#error");
  check(err.length > 10, name + ": empty error message");
  await page.screenshot({ path: path.join(artifacts, `web-${name}-error.png`), fullPage: true });

  // phone-readable: nothing wider than the viewport
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `${name}: the page is ${overflow}px wider than the screen`);
  check(problems.length === 0, `${name}: ${problems.join("; ")}`);
  await context.close();
  console.log(`web: ${name}: ok (first ${expected}, error shown as "${err.slice(0, 80)}")`);
}

(async () => {
  fs.mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run"],
  });
  try {
    await run(browser, "desktop", { viewport: { width: 1280, height: 900 } });
    await run(browser, "phone", { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error("web: FAIL: " + e.message); process.exit(1); });
