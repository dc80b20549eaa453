// strikeflow dashboard: the chain list and the live option-chain page.
// Data: /api/chains, /api/chain (snapshot at open), /api/series (charts), /ws (live updates, conflated by
// the server: each message holds the newest tick per instrument since the last one, the newest 1-minute
// chain row and volatility index row). Nothing is fetched from outside this server.
"use strict";

const strikeflow = (() => {
  const SIDE_FIELDS = ["oi", "oi_change", "volume", "delta", "iv", "last_price"];
  const nf0 = new Intl.NumberFormat("en-IN", { maximumFractionDigits: 0 });
  const fmt = {
    oi: (v) => (v == null ? "–" : nf0.format(v)),
    oi_change: (v) => (v == null ? "–" : (v > 0 ? "+" : "") + nf0.format(v)),
    volume: (v) => (v == null ? "–" : nf0.format(v)),
    delta: (v) => (v == null ? "–" : v.toFixed(3)),
    iv: (v) => (v == null ? "–" : (100 * v).toFixed(2)),
    last_price: (v) => (v == null ? "–" : v.toFixed(2)),
  };
  const pct = (v) => (v == null ? "–" : (100 * v).toFixed(2) + " %");
  const num = (v, d = 2) => (v == null ? "–" : Number(v).toLocaleString("en-IN", { maximumFractionDigits: d }));
  const ist = (epoch) => new Date(epoch * 1000).toLocaleTimeString("en-IN", { timeZone: "Asia/Kolkata", hour12: false });

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  async function listChains(tbody, status) {
    try {
      const { chains } = await getJSON("/api/chains");
      for (const c of chains) {
        const tr = tbody.insertRow();
        const link = `/chain?underlying=${encodeURIComponent(c.underlying)}&expiry=${c.expiry}`;
        tr.innerHTML = `<td><a href="${link}">${c.underlying}</a></td><td>${c.expiry}</td><td>${ist(c.bucket)}</td>`;
      }
      status.textContent = chains.length ? "" : "no chain data yet: is the worker running?";
    } catch (err) {
      status.textContent = "cannot load the chains: " + err.message;
    }
  }

  // ------------------------------------------------------------------ chain page
  class ChainPage {
    constructor(underlying, expiry) {
      this.underlying = underlying;
      this.expiry = expiry;
      this.rows = new Map(); // strike -> {strike, call, put}
      this.byToken = new Map(); // token -> [strike, side]
      this.header = {};
      this.vix = null;
      this.spot = null;
      this.updates = 0;
      this.tbody = document.querySelector("#chain tbody");
      this.status = document.getElementById("status");
      this.live = document.getElementById("live");
      this.query = `underlying=${encodeURIComponent(underlying)}&expiry=${encodeURIComponent(expiry)}`;
    }

    async start() {
      document.getElementById("title").textContent = `${this.underlying} ${this.expiry}`;
      try {
        const view = await getJSON(`/api/chain?${this.query}`);
        this.header = view.chain || {};
        this.vix = view.vix;
        this.spot = view.spot;
        for (const row of view.rows) this.rows.set(row.strike, row);
        this.indexTokens();
        this.renderTable();
        this.renderSummary();
      } catch (err) {
        this.status.textContent = "cannot load the chain: " + err.message;
      }
      this.connect(1000);
      this.loadSeries();
      setInterval(() => this.loadSeries(), 30000);
    }

    indexTokens() {
      this.byToken.clear();
      for (const row of this.rows.values()) {
        for (const side of ["call", "put"]) if (row[side]) this.byToken.set(row[side].token, [row.strike, side]);
      }
    }

    atmStrike() {
      if (this.header.atm_strike != null) return this.header.atm_strike;
      const f = this.header.forward;
      if (f == null) return null;
      let best = null;
      for (const k of this.rows.keys()) if (best == null || Math.abs(k - f) < Math.abs(best - f)) best = k;
      return best;
    }

    renderTable() {
      const atm = this.atmStrike();
      const strikes = [...this.rows.keys()].sort((a, b) => a - b);
      this.tbody.replaceChildren();
      for (const k of strikes) {
        const row = this.rows.get(k);
        const tr = this.tbody.insertRow();
        tr.dataset.strike = k;
        if (k === atm) tr.classList.add("atm");
        for (const f of SIDE_FIELDS) this.cell(tr, "call", f, row.call);
        const s = tr.insertCell();
        s.className = "strike";
        s.textContent = num(k);
        for (const f of [...SIDE_FIELDS].reverse()) this.cell(tr, "put", f, row.put);
      }
    }

    cell(tr, side, field, quote) {
      const td = tr.insertCell();
      td.dataset.field = `${side}.${field}`;
      td.textContent = fmt[field](quote ? quote[field] : null);
      return td;
    }

    renderSummary() {
      const h = this.header;
      const quality = h.strikes_quoted == null ? "–"
        : `${h.parity_violations}/${h.strikes_quoted} parity, ${h.crossed_quotes} crossed, ${h.butterfly_violations} fly`;
      const items = [
        ["spot", num(this.spot)], ["forward", num(h.forward)], ["ATM", num(h.atm_strike, 0)],
        ["ATM IV", pct(h.atm_iv)], ["PCR", num(h.pcr, 3)], ["max pain", num(h.max_pain, 0)],
        ["vol index", this.vix ? num(this.vix.vix) : "–"], ["GEX (₹ cr / 1%)", h.gex == null ? "–" : num(h.gex / 1e7, 1)],
        ["GEX flip", num(h.gex_flip, 0)], ["rr25", pct(h.rr25)], ["bf25", pct(h.bf25)], ["quotes", quality],
        ["bar (IST)", h.bucket ? ist(h.bucket) : "–"], ["updates", nf0.format(this.updates)],
      ];
      const box = document.getElementById("summary");
      box.replaceChildren(...items.map(([label, value]) => {
        const div = document.createElement("div");
        div.dataset.field = label;
        div.innerHTML = `<span>${label}</span><b>${value}</b>`;
        return div;
      }));
    }

    apply(update) {
      this.updates += 1;
      let newStrike = false;
      for (const tick of update.ticks) {
        if (tick.type === "INDEX") { this.spot = tick.last_price; continue; }
        if (tick.type === "FUT") continue;
        const side = tick.type === "CE" ? "call" : "put";
        let row = this.rows.get(tick.strike);
        if (!row) { row = { strike: tick.strike, call: null, put: null }; this.rows.set(tick.strike, row); newStrike = true; }
        const old = row[side] || {};
        const oiOpen = old.oi_open;
        row[side] = { ...old, ...tick, oi_open: oiOpen, oi_change: oiOpen == null ? null : tick.oi - oiOpen };
        if (!newStrike) this.refreshCells(row, side, old);
      }
      if (update.chain) this.header = update.chain;
      if (update.vix) this.vix = update.vix;
      if (newStrike || update.chain) { this.indexTokens(); this.renderTable(); }
      this.renderSummary();
      if (update.chain) { this.loadSeries(); this.refreshBaselines(); }
    }

    // OI change counts from each option's first bar of the session: a page opened before that bar was
    // stored learns it with the next minute's chain row.
    async refreshBaselines() {
      if ([...this.rows.values()].every((r) => ["call", "put"].every((s) => !r[s] || r[s].oi_open != null))) return;
      try {
        const view = await getJSON(`/api/chain?${this.query}`);
        for (const fresh of view.rows) {
          const row = this.rows.get(fresh.strike);
          for (const side of ["call", "put"]) {
            if (!row || !row[side] || !fresh[side] || fresh[side].oi_open == null) continue;
            row[side].oi_open = fresh[side].oi_open;
            row[side].oi_change = row[side].oi - fresh[side].oi_open;
          }
        }
        this.renderTable();
      } catch (err) {
        this.status.textContent = "cannot refresh the chain: " + err.message;
      }
    }

    refreshCells(row, side, old) {
      const tr = this.tbody.querySelector(`tr[data-strike="${row.strike}"]`);
      if (!tr) return;
      for (const f of SIDE_FIELDS) {
        const td = tr.querySelector(`td[data-field="${side}.${f}"]`);
        const text = fmt[f](row[side][f]);
        if (td && td.textContent !== text) {
          td.textContent = text;
          td.classList.remove("flash-up", "flash-down");
          void td.offsetWidth; // restart the animation
          td.classList.add((row[side][f] ?? 0) >= (old[f] ?? 0) ? "flash-up" : "flash-down");
        }
      }
    }

    connect(delay) {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${scheme}://${location.host}/ws?${this.query}`);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => { this.live.textContent = "live"; this.live.className = "badge live"; delay = 1000; };
      ws.onmessage = (event) => {
        const text = typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data);
        this.apply(JSON.parse(text));
        ws.send("ack"); // flow control: the server sends the next update once this one is handled
      };
      ws.onclose = (event) => {
        console.info(`live updates closed (code ${event.code}); reconnecting in ${delay / 1000}s`);
        this.live.textContent = "reconnecting"; this.live.className = "badge down";
        setTimeout(() => this.connect(Math.min(delay * 2, 15000)), delay);
      };
    }

    async loadSeries() {
      if (typeof uPlot === "undefined") return;
      try {
        const s = await getJSON(`/api/series?${this.query}`);
        this.drawOi(s);
        this.drawSeries(s);
      } catch (err) {
        this.status.textContent = "cannot load the charts: " + err.message;
      }
    }

    drawOi(s) {
      const el = document.getElementById("oi-chart");
      const width = el.clientWidth || 500;
      const callBars = uPlot.paths.bars({ size: [0.35, 30], align: -1 });
      const putBars = uPlot.paths.bars({ size: [0.35, 30], align: 1 });
      const opts = {
        width, height: 220, legend: { show: true },
        scales: { x: { time: false }, y: { range: (u, min, max) => [0, max * 1.05] } },
        series: [{ label: "strike" },
          { label: "call OI", stroke: "#3fb68b", fill: "#3fb68b88", paths: callBars, points: { show: false } },
          { label: "put OI", stroke: "#e0605e", fill: "#e0605e88", paths: putBars, points: { show: false } }],
        axes: [{ stroke: "#7f8b97" }, { stroke: "#7f8b97", size: 70 }],
      };
      const data = [s.strike, s.call_oi, s.put_oi];
      this.oiPlot?.destroy();
      this.oiPlot = new uPlot(opts, data, el);
    }

    drawSeries(s) {
      const el = document.getElementById("series-chart");
      const width = el.clientWidth || 500;
      const opts = {
        width, height: 220, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Asia/Kolkata"),
        scales: { pcr: {}, iv: {} },
        series: [{},
          { label: "PCR", stroke: "#e0b45e", scale: "pcr" },
          { label: "ATM IV %", stroke: "#5ea8e0", scale: "iv", value: (u, v) => (v == null ? "–" : v.toFixed(2)) }],
        axes: [{ stroke: "#7f8b97" },
          { scale: "pcr", stroke: "#e0b45e", size: 60, values: (u, vals) => vals.map((v) => v.toFixed(4)) },
          { scale: "iv", side: 1, stroke: "#5ea8e0", grid: { show: false } }],
      };
      const data = [s.bucket.map((b) => b + 60), s.pcr, s.atm_iv.map((v) => (v == null ? null : 100 * v))];
      this.seriesPlot?.destroy();
      this.seriesPlot = new uPlot(opts, data, el);
    }
  }

  function showChain(params) {
    const underlying = params.get("underlying");
    const expiry = params.get("expiry");
    if (!underlying || !expiry) {
      document.getElementById("status").textContent = "open a chain from the list: /chain?underlying=NIFTY&expiry=YYYY-MM-DD";
      return null;
    }
    const page = new ChainPage(underlying, expiry);
    window.strikeflowPage = page;
    page.start();
    return page;
  }

  return { listChains, showChain };
})();
