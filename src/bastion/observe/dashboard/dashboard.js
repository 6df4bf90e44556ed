// bastion's live dashboard: one Server-Sent Events stream, a snapshot a second.
"use strict";
const N = 120; // seconds of history in each chart
const series = { rps: [], p50: [], p99: [], flight: [], gc: [] };
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");

function push(list, value) { list.push(value); if (list.length > N) list.shift(); }
function fmt(n, digits) { return n == null ? "–" : Number(n).toLocaleString(undefined, { maximumFractionDigits: digits }); }
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"]; let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}
function age(s) {
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(0) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function draw(id, lines) {
  const c = $(id), dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d"); g.scale(dpr, dpr); g.clearRect(0, 0, w, h);
  const max = Math.max(1e-9, ...lines.flatMap((l) => l.data.filter((v) => v != null)));
  for (const l of lines) {
    g.beginPath(); g.strokeStyle = l.color; g.lineWidth = 1.6;
    l.data.forEach((v, i) => {
      const x = w - (l.data.length - 1 - i) * (w / (N - 1)), y = h - 2 - ((v || 0) / max) * (h - 4);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  }
}
function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }
function tiles(id, items) {
  const box = $(id); box.replaceChildren();
  for (const [label, value] of items) {
    const d = document.createElement("div"); d.className = "status";
    d.innerHTML = "<span class=muted></span><b></b>";
    d.firstChild.textContent = label; d.lastChild.textContent = value;
    box.append(d);
  }
}

function show(s) {
  const state = $("state");
  state.textContent = s.draining ? "draining" : s.ready ? "ready" : "starting";
  state.className = "pill " + (s.draining ? "warn" : s.ready ? "ok" : "bad");
  $("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
  push(series.rps, s.rps); push(series.p50, s.p50_ms); push(series.p99, s.p99_ms);
  push(series.flight, s.in_flight); push(series.gc, s.gc_pause_ms);
  $("rps").textContent = fmt(s.rps, 1);
  $("lat").textContent = [s.p50_ms, s.p90_ms, s.p99_ms].map((v) => v == null ? "–" : fmt(v, 2)).join(" · ") + " ms";
  $("conn").textContent = fmt(s.in_flight) + " · " + fmt(s.connections);
  $("gc").textContent = fmt(s.gc_pause_ms, 2) + " ms";
  draw("c-rps", [{ data: series.rps, color: "#2f6fed" }]);
  draw("c-lat", [{ data: series.p50, color: "#1f9d55" }, { data: series.p99, color: "#d97706" }]);
  draw("c-conn", [{ data: series.flight, color: "#7c3aed" }]);
  draw("c-gc", [{ data: series.gc, color: "#dc2626" }]);
  const st = $("statuses"); st.replaceChildren();
  for (const k of Object.keys(s.statuses)) {
    const d = document.createElement("div"); d.className = "status s" + k;
    d.innerHTML = "<span class=muted></span><b></b>";
    d.firstChild.textContent = k; d.lastChild.textContent = fmt(s.statuses[k], 1) + " · " + fmt(s.status_totals[k]);
    st.append(d);
  }
  const tb = $("workers"); tb.replaceChildren();
  for (const w of s.workers) {
    const tr = document.createElement("tr");
    tr.append(cell(w.pid), cell(w.state), cell(fmt(w.cpu, 1) + " %"), cell(bytes(w.rss)), cell(bytes(w.pss)),
      cell(fmt(w.requests)), cell(fmt(w.connections)), cell(fmt(w.lag_ms, 2) + " ms"), cell(age(w.age)));
    tb.append(tr);
  }
  $("upstream-panel").hidden = !s.upstreams.length;
  const ub = $("upstreams"); ub.replaceChildren();
  for (const u of s.upstreams) {
    const tr = document.createElement("tr"), st = cell(u.state);
    st.className = "state " + u.state;
    tr.append(cell(u.upstream), cell(u.server), st, cell(fmt(u.rps, 1)), cell(fmt(u.requests)),
      cell(fmt(u.failures)), cell(fmt(u.in_flight)), cell(fmt(u.latency_ms, 2) + " ms"));
    ub.append(tr);
  }
  tiles("tls", [["handshakes", fmt(s.tls.per_second, 1) + " · " + fmt(s.tls.handshakes)],
    ["in progress", fmt(s.tls.in_progress)], ["waiting", fmt(s.tls.waiting)],
    ["refused", fmt(s.tls.refused)], ["evicted", fmt(s.tls.evicted)], ["failed", fmt(s.tls.failed)]]);
  tiles("ws", [["open", fmt(s.websockets.open)],
    ["ended", fmt(s.websockets.ended_per_second, 1) + " · " + fmt(s.websockets.ended)]]);
  const rs = $("restarts"); rs.replaceChildren();
  for (const [cause, n] of Object.entries(s.restarts)) {
    const d = document.createElement("div"); d.className = "status";
    d.innerHTML = "<span class=muted></span><b></b>";
    d.firstChild.textContent = cause; d.lastChild.textContent = fmt(n);
    rs.append(d);
  }
}

const events = new EventSource("events" + (token ? "?token=" + encodeURIComponent(token) : ""));
events.onmessage = (e) => show(JSON.parse(e.data));
events.onerror = () => { const s = $("state"); s.textContent = "disconnected"; s.className = "pill bad"; };
