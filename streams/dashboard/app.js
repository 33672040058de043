// The live dashboard: polls /dashboard/feed once a second and redraws. No libraries, no network
// beyond this worker: the charts are a few lines of canvas drawing.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function drawLines(canvas, series, colors, unit) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  let max = 1;
  for (const s of series) for (const v of s) if (v != null && v > max) max = v;
  max = niceCeil(max);
  ctx.strokeStyle = "#30363d"; ctx.fillStyle = "#7d8590"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = h - 16 - (i / 4) * (h - 26);
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(compact(max * i / 4) + unit, 2, y + 4);
  }
  const n = series[0].length;
  series.forEach((s, k) => {
    ctx.strokeStyle = colors[k]; ctx.lineWidth = 1.6; ctx.beginPath();
    let pen = false;
    s.forEach((v, i) => {
      if (v == null) { pen = false; return; }
      const x = pad + (i / Math.max(n - 1, 1)) * (w - pad - 4);
      const y = h - 16 - (v / max) * (h - 26);
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    });
    ctx.stroke();
  });
  ctx.fillStyle = "#7d8590";
  ctx.fillText(`-${n}s`, pad, h - 2); ctx.fillText("now", w - 26, h - 2);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function compact(v) { return v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k" : (v < 10 ? +v.toFixed(1) : Math.round(v)); }

function pBar(p) { return `<span class="bar" style="width:${Math.round(p * 60)}px"></span>${p.toFixed(3)}`; }

function render(feed) {
  $("app-id").textContent = feed.app_id;
  $("model-version").textContent = feed.model_version || "loading";
  const ready = $("ready-badge");
  ready.textContent = feed.ready ? "ready" : "not ready";
  ready.className = "badge " + (feed.ready ? "ok" : "bad");
  $("pseudo-badge").textContent = "user ids pseudonymized";
  $("pseudo-badge").style.display = feed.pseudonymized ? "" : "none";
  $("total-in").textContent = fmt(feed.totals.events_in);
  $("total-out").textContent = fmt(feed.totals.intents_out);
  $("total-dlq").textContent = fmt(feed.totals.dead_letters);

  const s = feed.series;
  const last = s.slice(-11, -1);  // the current second is still filling
  const rate = last.reduce((a, r) => a + r.events_in, 0) / Math.max(last.length, 1);
  $("rate").textContent = fmt(Math.round(rate));
  const p99s = last.map((r) => r.p99_ms).filter((v) => v != null);
  $("p99").textContent = p99s.length ? Math.max(...p99s).toFixed(1) + " ms" : "–";

  drawLines($("throughput"), [s.map((r) => r.events_in), s.map((r) => r.intents_out), s.map((r) => r.dead_letters)],
            ["#d8dee4", "#58a6ff", "#f85149"], "");
  drawLines($("latency"), [s.map((r) => r.p50_ms), s.map((r) => r.p99_ms)], ["#d8dee4", "#d29922"], "");

  $("top").querySelector("tbody").innerHTML = feed.top_sessions.map((r) =>
    `<tr><td>${esc(r.user_id).slice(0, 14)}</td><td>${esc(r.session_id).slice(-16)}</td><td>${pBar(r.p)}</td>` +
    `<td class="num">${r.events}</td><td class="num">${r.cart.toFixed(2)}</td></tr>`).join("");
  $("recent").querySelector("tbody").innerHTML = feed.recent.slice(0, 15).map((r) =>
    `<tr><td>${esc(r.user_id).slice(0, 14)}</td><td>${pBar(r.p)}</td><td class="level-${esc(r.intent)}">${esc(r.intent)}</td>` +
    `<td class="num">${r.events}</td><td class="num">${r.cart.toFixed(2)}</td><td class="num">${r.latency_ms.toFixed(1)}</td></tr>`).join("");
  $("updated").textContent = new Date(feed.now * 1000).toLocaleTimeString();
}

async function tick() {
  try {
    const r = await fetch("/dashboard/feed", { cache: "no-store" });
    if (r.ok) render(await r.json());
  } catch (e) {
    $("updated").textContent = "worker unreachable";
  }
}

tick();
setInterval(tick, 1000);
