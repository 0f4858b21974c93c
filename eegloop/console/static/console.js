// eegloop operator console: traces, phase, quality, feedback, controls. No libraries, no network but this server.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const q = (p) => p + (p.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
let names = [], rate = 100, windowS = 10, buf = [], seq = 0, markers = [], bad = new Set(), dirty = false;

function ensure(n, len) {
  if (buf.length !== n || (buf[0] && buf[0].length !== len)) {
    buf = Array.from({length: n}, () => new Float32Array(len));
  }
}

function push(traces) {
  if (!traces.length) return;
  const len = Math.round(rate * windowS), k = traces[0].length;
  ensure(traces.length, len);
  for (let c = 0; c < traces.length; c++) {
    const b = buf[c];
    if (k >= len) { b.set(traces[c].slice(k - len)); continue; }
    b.copyWithin(0, k);
    b.set(traces[c], len - k);
  }
  dirty = true;
}

function draw() {
  if (dirty && buf.length) {
    dirty = false;
    const cv = document.getElementById("traces"), g = cv.getContext("2d");
    const W = cv.width, H = cv.height, n = buf.length, len = buf[0].length, row = H / n;
    g.fillStyle = "#000"; g.fillRect(0, 0, W, H);
    const show = Math.max(1, Math.ceil(n / 64));  // at most 64 rows drawn; every channel feeds the quality table
    for (let c = 0; c < n; c += show) {
      const b = buf[c]; let mean = 0, sd = 0;
      for (let i = 0; i < len; i++) mean += b[i];
      mean /= len;
      for (let i = 0; i < len; i++) sd += (b[i] - mean) ** 2;
      sd = Math.sqrt(sd / len) || 1;
      const y0 = (c / show + 0.5) * row * show, scale = row * show / (6 * sd);
      g.strokeStyle = bad.has(names[c]) ? "#f55" : "#6cf"; g.lineWidth = 1; g.beginPath();
      for (let i = 0; i < len; i++) {
        const x = i * W / len, y = y0 - (b[i] - mean) * scale;
        i ? g.lineTo(x, y) : g.moveTo(x, y);
      }
      g.stroke();
      g.fillStyle = bad.has(names[c]) ? "#f55" : "#888"; g.font = "12px sans-serif";
      g.fillText(names[c] || "", 4, y0 - 2);
    }
    g.strokeStyle = "#fc3";
    for (const [s, ev, label] of markers) {
      const x = W - (seq - s) * W / len;
      if (x < 0) continue;
      g.beginPath(); g.moveTo(x, 0); g.lineTo(x, H); g.stroke();
      if (ev === "stim_on") { g.fillStyle = "#fc3"; g.fillText(label, x + 2, 12); }
    }
  }
  requestAnimationFrame(draw);
}

function text(id, s) { document.getElementById(id).textContent = s; }

function update(d) {
  if (d.skipped) return;
  if (d.traces && d.traces.length) window.eegloopTraceUpdates = (window.eegloopTraceUpdates || 0) + 1;
  if (d.names && d.names.join() !== names.join()) { names = d.names; buf = []; }
  rate = d.rate || rate; windowS = d.window_s || windowS;
  push(d.traces || []);
  seq = d.seq;
  markers = markers.concat(d.markers || []).filter(m => seq - m[0] < rate * windowS);
  bad = new Set(d.bad || []);
  const p = d.phase || {};
  let ph = p.name || "";
  if (p.run) ph += ` — run ${p.run}/${p.n_runs} block ${p.block}/${p.n_blocks}`;
  if (p.time_left_s != null) ph += ` — ~${Math.round(p.time_left_s)} s left`;
  if (p.detail) ph += ` (${p.detail})`;
  if (d.finished) ph = `visit ${d.finished.status}` + (d.finished.session_id ? ` (session ${d.finished.session_id})` : "");
  text("phase", ph);
  const s = d.stats || {};
  document.getElementById("stats").innerHTML = ["epochs", "lost_samples", "gaps", "dropped_frames", "rejected"]
    .map(k => `<span>${k.replace("_", " ")} <b>${s[k] ?? "–"}</b></span>`).join(" ");
  const t = d.train || {};
  text("train", t.epoch ? `epoch ${t.epoch}/${t.n_epochs}` + (t.val_score != null ? `, validation ${t.val_score.toFixed(2)}` : "") : "—");
  const fb = d.feedback || [];
  if (fb.length) {
    const last = fb[fb.length - 1], ok = fb.filter(f => f.cue === f.decoded).length;
    const lat = Object.entries(last.latencies || {}).map(([k, v]) => `${k.replace("_ms", "")} ${v} ms`).join(", ");
    document.getElementById("fb").innerHTML =
      `<div id="fbtrial">trial ${last.k}/${last.n}: shown <b>${last.cue}</b>, decoded <b id="decoded">${last.decoded}</b>` +
      ` (p=${last.probability.toFixed(2)})</div>` +
      (last.image != null ? `<img id="fbimage" alt="feedback image" src="${q("image/" + last.image)}">` : "") +
      `<div>${lat}</div><div>running accuracy ${ok}/${fb.length} (chance ${(1 / last.n_classes).toFixed(2)})</div>`;
  }
  const qual = d.quality || [];
  document.getElementById("quality").innerHTML = "<tr><th>ch</th><th></th><th>RMS µV</th><th>line µV</th></tr>" +
    qual.map(c => `<tr><td>${c.name}</td><td class="${c.verdict}">${c.verdict}</td><td>${c.rms}</td><td>${c.line}</td></tr>`).join("");
  text("lines", (d.lines || []).join("\n"));
  if (d.finished && d.finished.report) {
    document.getElementById("report").innerHTML = `<a id="reportlink" href="${q("report")}" target="_blank">the session's report</a>`;
  }
}

function control(action) {
  fetch(q("control/" + action), {method: "POST"}).then(r => r.ok || alert("refused: " + r.status));
}
for (const a of ["pause", "resume", "abort"]) {
  document.getElementById(a).onclick = () => (a !== "abort" || confirm("Abort the visit? Completed blocks are kept.")) && control(a);
}
fetch(q("sessions")).then(r => r.json()).then(rows => {
  if (!rows.length) return;
  document.getElementById("report").innerHTML = "<h3>Sessions</h3>" + rows.map(r =>
    `<div><a href="${q("report?session=" + r.id)}" target="_blank">session ${r.id}</a> ${r.subject}, ${r.protocol},` +
    ` ${r.kind}, ${r.status}, ${r.started}</div>`).join("");
});
const es = new EventSource(q("events"));
es.onmessage = (e) => update(JSON.parse(e.data));
es.onerror = () => text("phase", "console disconnected (the visit's process has ended?)");
requestAnimationFrame(draw);
