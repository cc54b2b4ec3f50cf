// tests/web/page.test.js - the web page in a real browser (Debian's chromium, headless, driven
// by playwright-core). Run by tests/e2e_web.sh, which starts the server and sets:
//   SL_URL        base URL of the server          SL_PHOTO   a shopper photo (JPEG)
//   SL_EXPECT     product id the photo shows      SL_ARTIFACTS  directory for screenshots
//   SL_PRODUCTS   products in the catalog (some have no category)
//   SL_LEFT, SL_RIGHT  two catalog images; SL_LEFT_ID, SL_RIGHT_ID  their products
// Checks, on a desktop and a phone-sized viewport: the header counts every product, the page
// has an icon (no 404 anywhere), categories load into the filter, uploading the photo (file
// picker, drag-and-drop, paste) shows results with the right product first, cards show a
// title (a link to the product page when the catalog has one), price, category and the
// confidence in words - never a score or an internal id - and a thumbnail; "No close match" when
// no result is the product (a noise photo); "Similar" works and
// "Back to results" (the button and the browser's back) brings the results back; a box drawn
// on a photo of two products searches only the part in the box; filters apply; errors are
// shown in words; the page loads nothing from anywhere but the server.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const url = process.env.SL_URL;
const photo = process.env.SL_PHOTO;
const expected = process.env.SL_EXPECT;
const artifacts = process.env.SL_ARTIFACTS || "build/test-artifacts";
const products = Number(process.env.SL_PRODUCTS);
const left = { file: process.env.SL_LEFT, id: process.env.SL_LEFT_ID };
const right = { file: process.env.SL_RIGHT, id: process.env.SL_RIGHT_ID };

function check(cond, msg) { if (!cond) throw new Error(msg); }
let step = "start"; // what the test was doing, for the failure message

async function firstCard(page) {
  await page.waitForSelector("#results li.card", { timeout: 30000 });
  return page.$eval("#results li.card", (li) => ({
    id: li.dataset.productId,
    title: li.querySelector(".title").textContent,
    href: li.querySelector("a.title") ? li.querySelector("a.title").href : null,
    price: li.querySelector(".price").textContent,
    category: li.querySelector(".category").textContent,
    confidence: li.querySelector(".confidence").textContent,
    text: li.innerText,
    img: li.querySelector("img").naturalWidth,
  }));
}

async function cardIds(page) {
  return page.$$eval("#results li.card", (ls) => ls.map((l) => l.dataset.productId));
}

async function resetResults(page) {
  await page.evaluate(() => { document.getElementById("results").textContent = ""; });
}

// Does `action`, waits for the search it starts and returns that response's JSON.
async function searched(page, action, pred) {
  const resp = page.waitForResponse((r) => r.url().includes("/v1/search") && (!pred || pred(r.url())), { timeout: 30000 });
  await action();
  const r = await resp;
  check(r.status() === 200, "search answered " + r.status());
  return { url: r.url(), json: await r.json() };
}

// A JPEG of two images side by side, drawn in the page (canvas), as bytes.
async function sideBySide(page, a, b) {
  const b64 = await page.evaluate(async ([l, r]) => {
    const load = (d) => new Promise((res, rej) => { const i = new Image(); i.onload = () => res(i); i.onerror = rej; i.src = "data:image/jpeg;base64," + d; });
    const [x, y] = await Promise.all([load(l), load(r)]);
    const c = document.createElement("canvas");
    c.width = x.width + y.width;
    c.height = Math.max(x.height, y.height);
    const g = c.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, c.width, c.height);
    g.drawImage(x, 0, 0);
    g.drawImage(y, x.width, 0);
    const blob = await new Promise((res) => c.toBlob(res, "image/jpeg", 0.92));
    const u8 = new Uint8Array(await blob.arrayBuffer());
    let s = "";
    for (const v of u8) s += String.fromCharCode(v);
    return btoa(s);
  }, [fs.readFileSync(a).toString("base64"), fs.readFileSync(b).toString("base64")]);
  return Buffer.from(b64, "base64");
}

// Drags a box on the preview from (fx0, fy0) to (fx1, fy1), fractions of the shown photo.
async function drawBox(page, fx0, fy0, fx1, fy1) {
  await page.$eval("#preview", (i) => i.scrollIntoView({ block: "center" }));
  const b = await page.$eval("#preview", (i) => { const r = i.getBoundingClientRect(); return { x: r.left, y: r.top, w: r.width, h: r.height }; });
  await page.mouse.move(b.x + b.w * fx0, b.y + b.h * fy0);
  await page.mouse.down();
  await page.mouse.move(b.x + b.w * fx1, b.y + b.h * fy1, { steps: 6 });
  await page.mouse.up();
}

async function run(browser, name, contextOpts) {
  const context = await browser.newContext(contextOpts);
  const page = await context.newPage();
  const problems = [];
  const failed = [];
  page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push("console: " + m.text()); });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(url) && !u.startsWith("blob:") && !u.startsWith("data:")) problems.push("external request: " + u);
  });
  // every failed response is one this test asked for (the broken uploads below), never a 404
  page.on("response", (r) => { if (r.status() >= 400) failed.push(r.status() + " " + r.url()); });
  await page.goto(url + "/");
  await page.waitForFunction(() => document.querySelectorAll("#category option").length > 1, null, { timeout: 15000 });
  const cats = await page.$$eval("#category option", (os) => os.map((o) => o.value).filter(Boolean));
  check(cats.length > 1, name + ": categories not loaded");
  // the header counts every product, also those without a category
  await page.waitForFunction(() => /products? in/.test(document.getElementById("catalog").textContent), null, { timeout: 15000 });
  const header = await page.textContent("#catalog");
  check(header.startsWith(products + " products in " + cats.length + " categories"), `${name}: header says "${header}", the catalog has ${products} products`);
  // an icon, served
  const icon = await page.evaluate(() => {
    const l = document.querySelector("link[rel=icon]");
    return l ? fetch(l.href).then((r) => [r.status, r.headers.get("Content-Type")]) : [0, ""];
  });
  check(icon[0] === 200 && /^image\//.test(icon[1]), `${name}: icon ${JSON.stringify(icon)}`);
  // the phone camera: an image input with the capture attribute, next to the plain file picker
  const inputs = await page.$$eval("input[type=file]", (is) => is.map((i) => [i.accept, i.hasAttribute("capture")]));
  check(inputs.length === 2 && inputs.every((x) => x[0] === "image/*") && inputs.some((x) => x[1]),
        `${name}: file inputs ${JSON.stringify(inputs)}`);

  // 1. file picker
  step = `${name}: file picker`;
  const s1 = await searched(page, () => page.setInputFiles("#file", photo));
  let c = await firstCard(page);
  check(c.id === expected, `${name}: first result is ${c.id}, expected ${expected}`);
  check(c.title.length > 0 && /\d+\.\d\d/.test(c.price) && c.category.length > 0 && /^(Match|Similar)$/.test(c.confidence),
        `${name}: card fields missing: ${JSON.stringify(c)}`);
  // no raw score, no internal id: only words a shopper understands
  const shown = await page.$eval("#results", (ul) => ul.innerText);
  check(!/P\d{6}/.test(shown) && !/score|\d\.\d{3}/i.test(shown), `${name}: internal ids or scores shown: ${shown.slice(0, 200)}`);
  // the catalog has product pages and prices in EUR (tests/e2e_web.sh)
  const r0 = s1.json.results[0];
  check(typeof r0.url === "string" && /^https:\/\//.test(r0.url) && c.href === r0.url,
        `${name}: the title links to ${c.href}, the product page is ${r0.url}`);
  if ("match" in r0) check(c.confidence === (r0.match ? "Match" : "Similar"), `${name}: confidence "${c.confidence}" for match=${r0.match}`);
  check(r0.currency === "EUR", `${name}: results carry currency ${r0.currency}`);
  // the status says "No close match" exactly when no result is a match (the photo shows P000005)
  const st1 = await page.textContent("#status");
  check(r0.match === true && !/No close match/.test(st1), `${name}: the shopper photo: match=${r0.match}, status "${st1}"`);
  const money = await page.evaluate(([v, cur]) => new Intl.NumberFormat(undefined, { style: "currency", currency: cur }).format(v), [r0.price, r0.currency]);
  check(c.price === money && /€/.test(c.price), `${name}: price "${c.price}", expected "${money}"`);
  await page.waitForFunction(() => { const i = document.querySelector("#results li.card img"); return i && i.complete && i.naturalWidth > 0; },
                             null, { timeout: 15000 });
  await page.waitForSelector("#preview", { state: "visible", timeout: 5000 });
  await page.screenshot({ path: path.join(artifacts, `web-${name}.png`), fullPage: true });

  // 2. drag and drop, 3. paste: the same photo through the other two ways in
  step = `${name}: drag and drop, 3. paste: the same photo through the other two ways in`;
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
  step = `${name}: a category filter: every result is in it`;
  const want = c.category;
  await page.selectOption("#category", want);
  await resetResults(page);
  await page.click("#search");
  await firstCard(page);
  const catsShown = await page.$$eval("#results .category", (ns) => ns.map((n) => n.textContent));
  check(catsShown.every((x) => x === want), `${name}: category filter leaked: ${catsShown}`);
  await searched(page, () => page.click("#clear")); // searches again without the filter

  // 5. similar, and back to the results (the page's button, then the browser's back)
  step = `${name}: similar, and back to the results (the page's button, then the browser's back)`;
  await page.waitForSelector("#results li.card button.similar");
  await resetResults(page);
  await searched(page, () => page.setInputFiles("#file", photo));
  await firstCard(page);
  const before = await cardIds(page);
  const statusBefore = await page.textContent("#status");
  check(await page.isHidden("#back"), `${name}: "back" shown before any Similar`);
  await page.click("#results li.card button.similar");
  await page.waitForFunction(() => /^Similar to/.test(document.getElementById("status").textContent), null, { timeout: 15000 });
  const simIds = await cardIds(page);
  check(simIds.length > 0 && !simIds.includes(expected), `${name}: similar list ${simIds}`);
  await page.waitForSelector("#back", { state: "visible" });
  await page.screenshot({ path: path.join(artifacts, `web-${name}-similar.png`), fullPage: true });
  await page.click("#back");
  await page.waitForFunction((s) => document.getElementById("status").textContent === s, statusBefore, { timeout: 5000 })
    .catch(async (e) => { throw new Error(`back: status "${await page.textContent("#status")}", expected "${statusBefore}"`); });
  check(JSON.stringify(await cardIds(page)) === JSON.stringify(before), `${name}: back to results shows ${await cardIds(page)}, was ${before}`);
  check(await page.isHidden("#back"), `${name}: "back" still shown on the results`);
  await page.click("#results li.card:nth-child(2) button.similar");
  await page.waitForFunction(() => /^Similar to/.test(document.getElementById("status").textContent), null, { timeout: 15000 });
  await page.goBack();
  await page.waitForFunction((s) => document.getElementById("status").textContent === s, statusBefore, { timeout: 5000 })
    .catch(async (e) => { throw new Error(`browser back: status "${await page.textContent("#status")}", expected "${statusBefore}"`); });
  check(JSON.stringify(await cardIds(page)) === JSON.stringify(before), `${name}: the browser's back shows ${await cardIds(page)}, was ${before}`);

  // 6. a box on a photo of two products searches only what is in it
  step = `${name}: a box on a photo of two products searches only what is in it`;
  const two = await sideBySide(page, left.file, right.file);
  await searched(page, () => page.setInputFiles("#file", { name: "two.jpg", mimeType: "image/jpeg", buffer: two }));
  await page.waitForSelector("#preview", { state: "visible", timeout: 5000 });
  check(await page.isHidden("#whole"), `${name}: "Whole photo" shown without a box`);
  let s = await searched(page, () => drawBox(page, 0.55, 0.08, 0.95, 0.92), (u) => u.includes("region="));
  const reg = new URL(s.url).searchParams.get("region").split(",").map(Number);
  check(reg.length === 4 && reg[0] >= 320 && reg[0] + reg[2] <= 640 && reg[3] >= 200, `${name}: region ${reg} for the right half of 640x320`);
  c = await firstCard(page);
  check(c.id === right.id, `${name}: the box on the right product finds ${c.id}, expected ${right.id}`);
  check(/selected part/.test(await page.textContent("#status")), `${name}: the status does not say a part was searched`);
  check(await page.isVisible("#box") && await page.isVisible("#whole"), `${name}: the box or "Whole photo" is not shown`);
  await page.screenshot({ path: path.join(artifacts, `web-${name}-crop.png`), fullPage: true });
  s = await searched(page, () => drawBox(page, 0.45, 0.9, 0.05, 0.1), (u) => u.includes("region=")); // drawn the other way
  c = await firstCard(page);
  check(c.id === left.id, `${name}: the box on the left product finds ${c.id}, expected ${left.id}`);
  s = await searched(page, () => page.click("#whole"));
  check(!s.url.includes("region="), `${name}: "Whole photo" still sent a region`);
  check(await page.isHidden("#box"), `${name}: the box stays after "Whole photo"`);

  // 6b. a photo of no product (seeded noise): results are only similar products, and the page says so
  step = `${name}: a photo of no product says "No close match"`;
  const noise = await page.evaluate(() => {
    const cv = document.createElement("canvas");
    cv.width = 320; cv.height = 240;
    const g = cv.getContext("2d"), im = g.createImageData(320, 240);
    let x = 12345;
    for (let i = 0; i < im.data.length; i++) { x = (x * 1103515245 + 12345) >>> 0; im.data[i] = i % 4 === 3 ? 255 : x >>> 24; }
    g.putImageData(im, 0, 0);
    return cv.toDataURL("image/png").split(",")[1];
  });
  s = await searched(page, () => page.setInputFiles("#file", { name: "noise.png", mimeType: "image/png", buffer: Buffer.from(noise, "base64") }));
  await firstCard(page);
  const badges = await page.$$eval("#results .confidence", (ns) => ns.map((n) => n.textContent));
  const st2 = await page.textContent("#status");
  check(s.json.results.length > 0 && s.json.results.every((m) => m.match === false), `${name}: noise matched ${JSON.stringify(s.json.results.map((m) => m.match))}`);
  check(/^No close match: \d+ similar products? found/.test(st2) && badges.every((b) => b === "Similar"),
        `${name}: noise: status "${st2}", badges ${badges}`);

  // 7. errors in words: not an image (client side) and an undecodable image (server side)
  step = `${name}: errors in words: not an image (client side) and an undecodable image (server side)`;
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
  const unexpected = failed.filter((f) => !/^(400|415) .*\/v1\/search/.test(f));
  check(unexpected.length === 0, `${name}: failed requests: ${unexpected.join("; ")}`);
  check(problems.length === 0, `${name}: ${problems.join("; ")}`);
  await context.close();
  console.log(`web: ${name}: ok (first ${expected}, boxes found ${left.id} and ${right.id}, error shown as "${err.slice(0, 80)}")`);
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
})().catch((e) => { console.error("web: FAIL (" + step + "): " + e.message); process.exit(1); });
