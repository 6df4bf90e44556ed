// Served by bastion's static handler, like demo.css.
"use strict";

const ticks = document.getElementById("ticks");
const source = new EventSource("/events");
source.onmessage = (e) => {
  ticks.textContent += e.data + "\n";
  ticks.scrollTop = ticks.scrollHeight;
};
source.addEventListener("done", (e) => {
  ticks.textContent += "(" + e.data + "; reload for more)\n";
  source.close();
});

document.getElementById("upload").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = document.getElementById("result");
  out.textContent = "uploading...";
  const r = await fetch("/upload", { method: "POST", body: new FormData(e.target) });
  const j = await r.json();
  out.textContent = j.error || `${j.filename}: ${j.size} bytes, sha256 ${j.sha256}`;
});

// What bastion added to responses: compression, static file validators, security headers.
const SHOWN = ["content-encoding", "cache-control", "etag", "last-modified",
               "x-content-type-options", "x-frame-options", "referrer-policy", "server"];
async function describe(url, cell) {
  const r = await fetch(url, { cache: "no-store" });
  await r.arrayBuffer();
  const parts = SHOWN.filter((h) => r.headers.has(h)).map((h) => `${h}: ${r.headers.get(h)}`);
  document.getElementById(cell).textContent = parts.join("\n");
}
describe("/", "page-headers");
describe("/static/demo.css", "css-headers");
