// The admin port's dashboard: polls GET /v1/status and draws it. Served from
// the binary (actors/admin/dashboard, embedded at build time); no inline
// script (the page's Content-Security-Policy forbids it) and no markup from strings:
// every value from the status document (names, errors, addresses that other
// nodes chose) is set as text.
"use strict";

(function () {
  const POLL_MS = 2000;
  const WINDOW_MS = 5 * 60 * 1000; // the chart's span
  const TOKEN_KEY = "p2proxy-admin-token";

  let token = "";
  let timer = null;
  let samples = []; // {t, a, b}: cumulative counters at time t (ms)
  let kind = "";    // "node" or "server", from the first document
  let generation = 0; // bumped when the token changes: older answers are dropped

  const $ = (id) => document.getElementById(id);

  // --- token: from the URL fragment (#token=...), else this tab's storage ----
  function takeToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      token = decodeURIComponent(m[1]);
      sessionStorage.setItem(TOKEN_KEY, token);
      // The fragment never reaches the server; drop it from the address bar
      // and the history too.
      history.replaceState(null, "", location.pathname + location.search);
    } else {
      token = sessionStorage.getItem(TOKEN_KEY) || "";
    }
    $("forget").hidden = token === "";
  }

  function askToken(message) {
    $("auth").hidden = false;
    $("auth-message").textContent = message;
    $("node-view").hidden = true;
    $("server-view").hidden = true;
    $("updated").textContent = "no data";
    // what a previous token showed does not stay in the page
    for (const t of document.querySelectorAll("main tbody, main table.kv")) t.replaceChildren();
    samples = [];
    $("token").focus();
  }

  // --- formatting ------------------------------------------------------------
  function n(v) {
    // 64-bit counters are strings in the protobuf JSON mapping
    const x = Number(v === undefined || v === "" ? 0 : v);
    return Number.isFinite(x) ? x : 0;
  }

  function bytes(v) {
    let x = n(v);
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i++;
    }
    return (i === 0 ? String(x) : x.toFixed(x < 10 ? 2 : 1)) + " " + units[i];
  }

  function duration(ms) {
    let s = Math.floor(n(ms) / 1000);
    if (s < 60) return s + " s";
    const parts = [];
    const d = Math.floor(s / 86400);
    s %= 86400;
    const h = Math.floor(s / 3600);
    s %= 3600;
    const m = Math.floor(s / 60);
    s %= 60;
    if (d) parts.push(d + " d");
    if (h || d) parts.push(h + " h");
    parts.push(m + " min");
    if (!d) parts.push(s + " s");
    return parts.join(" ");
  }

  function shortId(id) {
    return id && id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-4) : id || "";
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function badge(text, prefix) {
    return el("span", text || "—", "badge " + prefix + "-" + (text || "none"));
  }

  function cell(row, content, cls) {
    const td = el("td", null, cls);
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content === undefined || content === null ? "" : String(content);
    row.appendChild(td);
    return td;
  }

  function kv(table, pairs) {
    table.replaceChildren();
    for (const [k, v] of pairs) {
      const tr = el("tr");
      tr.appendChild(el("th", k));
      cell(tr, v);
      table.appendChild(tr);
    }
  }

  function fill(tableId, rows, emptyText, columns) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const tr = el("tr", null, "empty");
      const td = el("td", emptyText);
      td.colSpan = columns;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    for (const r of rows) body.appendChild(r);
  }

  // --- the path a session took ------------------------------------------------
  function pathClass(s) {
    if (s.pathClass) return s.pathClass;
    const l = s.localCandidateType || "";
    const r = s.remoteCandidateType || "";
    if (l === "relay" || r === "relay") return "relay";
    return l === "" ? "none" : "direct";
  }

  function pathText(v) {
    if (v === undefined || v === null || v === "") return "(none)";
    return typeof v === "object" ? Object.values(v).join(" ") : String(v);
  }

  function pathHistory(s) {
    const h = s.pathHistory || [];
    if (!h.length) return el("span", "no changes", "muted path-history");
    const d = el("details", null, "path-history");
    const last = h[h.length - 1];
    const changes = h.filter((e) => e.reason !== "initial").length;
    d.appendChild(el("summary", changes === 0
      ? "first pair " + pathText(last.to) + ", no changes"
      : changes + " change" + (changes > 1 ? "s" : "") + ", last: " + pathText(last.from) +
          " → " + pathText(last.to) + (last.reason ? " (" + last.reason + ")" : "")));
    const ol = el("ol", null, "history");
    for (const e of h) {
      ol.appendChild(el("li", (e.time || "") + "  " + pathText(e.from) + " → " + pathText(e.to) +
                        (e.reason ? " (" + e.reason + ")" : "")));
    }
    d.appendChild(ol);
    return d;
  }

  // --- node --------------------------------------------------------------------
  function renderNode(st) {
    $("title").textContent = "p2proxy node " + shortId(st.nodeId);
    document.title = "p2proxy node " + shortId(st.nodeId);
    const p = st.process || {};
    kv($("node"), [
      ["id", st.nodeId],
      ["version", st.version],
      ["started", (st.started || "") + " (up " + duration(n(st.uptimeSeconds) * 1000) + ")"],
      ["process", n(p.openFds) + " fds, " + n(p.runningActors) + " actors, " + bytes(p.rssBytes) +
                  " resident"],
    ]);
    const sg = st.signal || {};
    const hist = sg.history || [];
    const lastEvent = hist.length ? hist[hist.length - 1] : null;
    kv($("signal"), [
      ["server", sg.server],
      ["state", badge(sg.state, "state")],
      ["connected since", sg.connectedSince || "—"],
      ["observed address", sg.observedAddress || "—"],
      ["reconnects", n(sg.reconnects) + " (login failures " + n(sg.loginFailures) + ")"],
      ["frames in / out", n(sg.framesIn) + " / " + n(sg.framesOut)],
      ["signals in / out", n(sg.signalsIn) + " / " + n(sg.signalsOut)],
      ["last error", sg.lastError || "—"],
      ["last event", lastEvent ? lastEvent.time + " " + lastEvent.event +
                                 (lastEvent.detail ? ": " + lastEvent.detail : "") : "—"],
    ]);

    const sl = st.sessions || {};
    const sessions = sl.sessions || [];
    fill("sessions", sessions.map((s) => {
      const tr = el("tr", null, "session");
      tr.dataset.peer = s.peer || "";
      const pc = pathClass(s);
      tr.dataset.path = pc;
      cell(tr, shortId(s.peer), "id").title = s.peer || "";
      cell(tr, badge(s.state, "state"));
      cell(tr, badge(pc, "path"), "path-class");
      cell(tr, (s.localCandidateType || "?") + " " + (s.localAddress || "") + " → " +
               (s.remoteCandidateType || "?") + " " + (s.remoteAddress || ""), "mono");
      cell(tr, s.rttMs !== undefined ? Number(s.rttMs).toFixed(1) + " ms" : "—", "num");
      cell(tr, bytes(s.bytesSent), "num");
      cell(tr, bytes(s.bytesReceived), "num");
      cell(tr, n(s.openStreams), "num");
      cell(tr, pathHistory(s));
      return tr;
    }), "no sessions", 9);
    const failures = Object.entries(sl.openFailures || {})
      .map(([k, v]) => k + " " + v).join(", ");
    $("sessions-summary").textContent = "opened " + n(sl.opened) + ", accepted " +
      n(sl.accepted) + ", recently closed " + (sl.recentlyClosed || []).length +
      (failures ? ", open failures: " + failures : "");

    const channels = st.channels || [];
    fill("channels", channels.map((c) => {
      const tr = el("tr", null, "channel");
      tr.dataset.resource = c.resource || "";
      cell(tr, c.side);
      cell(tr, c.resource);
      cell(tr, c.client, "mono");
      cell(tr, shortId(c.peer), "id").title = c.peer || "";
      cell(tr, badge(c.state, "state"));
      cell(tr, bytes(c.bytesIn), "num channel-in");
      cell(tr, bytes(c.bytesOut), "num channel-out");
      cell(tr, duration(c.ageMs), "num channel-age");
      return tr;
    }), "no open channels", 8);
    $("channels-summary").textContent = "ended: " + n(st.channelsOpened) + " reached their target, " +
      n(st.channelsFailed) + " failed; their bytes in " + bytes(st.channelBytesIn) + ", out " +
      bytes(st.channelBytesOut);

    fill("exports", (st.exports || []).map((x) => {
      const tr = el("tr", null, "export");
      const mine = channels.filter((c) => c.side === "export" && c.resource === x.name);
      cell(tr, x.name);
      cell(tr, x.target, "mono");
      cell(tr, x.protocol);
      cell(tr, badge(x.registration || "pending", "state")).appendChild(
        el("span", x.registrationError ? " " + x.registrationError +
           ((x.owners || []).length ? " (owner " + x.owners.map(shortId).join(", ") + ")" : "")
                                       : ""));
      cell(tr, mine.length, "num");
      cell(tr, bytes(mine.reduce((a, c) => a + n(c.bytesIn), 0)), "num");
      cell(tr, bytes(mine.reduce((a, c) => a + n(c.bytesOut), 0)), "num");
      return tr;
    }), "no exports", 7);

    const listeners = (st.actors || []).filter((a) => a.name === "listener");
    fill("listeners", listeners.map((a) => {
      const f = a.fields || {};
      const tr = el("tr", null, "listener");
      const reasons = Object.keys(f).filter((k) => k.startsWith("refused_"))
        .map((k) => k.slice(8) + " " + f[k]).join(", ");
      cell(tr, f.bind, "mono");
      cell(tr, f.protocol);
      cell(tr, f.resource || "(by name)");
      cell(tr, n(f.accepted), "num");
      cell(tr, n(f.refused) + (reasons ? " (" + reasons + ")" : ""), "num");
      cell(tr, n(f.open_channels), "num");
      return tr;
    }), "no listeners", 6);

    let inTotal = n(st.channelBytesIn);
    let outTotal = n(st.channelBytesOut);
    for (const c of channels) {
      inTotal += n(c.bytesIn);
      outTotal += n(c.bytesOut);
    }
    sample(inTotal, outTotal);
    const r = chart($("chart"), (v) => bytes(v) + "/s");
    $("rate-now").textContent = r ? "now: in " + bytes(r.a) + "/s, out " + bytes(r.b) + "/s" : "";
  }

  // --- signaling server --------------------------------------------------------
  function renderServer(st) {
    $("title").textContent = "p2proxy signaling server";
    document.title = "p2proxy signaling server";
    const nodes = st.nodes || [];
    kv($("server"), [
      ["version", st.version],
      ["started", (st.started || "") + " (up " + duration(n(st.uptimeSeconds) * 1000) + ")"],
      ["online nodes", nodes.length],
      ["connections", n(st.connections)],
      ["logins / failures", n(st.logins) + " / " + n(st.loginFailures)],
      ["frames in / out", n(st.framesIn) + " / " + n(st.framesOut)],
      ["dropped connections", n(st.droppedConnections)],
    ]);
    fill("nodes", nodes.map((x) => {
      const tr = el("tr", null, "online-node");
      tr.dataset.node = x.nodeId || "";
      cell(tr, x.nodeId, "id");
      cell(tr, x.address, "mono");
      cell(tr, x.since);
      cell(tr, (x.exports || []).join(", ") || "—", "names");
      cell(tr, (x.refused || []).join(", ") || "—");
      return tr;
    }), "no node online", 5);
    sample(n(st.framesIn), n(st.framesOut));
    const r = chart($("server-chart"), (v) => v.toFixed(1) + "/s");
    $("frames-now").textContent = r ? "now: in " + r.a.toFixed(1) + "/s, out " + r.b.toFixed(1) +
                                      "/s" : "";
  }

  // --- throughput: rates between successive polls, as an inline SVG -----------
  function sample(a, b) {
    const t = Date.now();
    samples.push({ t, a, b });
    while (samples.length > 2 && samples[0].t < t - WINDOW_MS) samples.shift();
  }

  function rates() {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const p = samples[i - 1];
      const q = samples[i];
      const dt = (q.t - p.t) / 1000;
      if (dt <= 0) continue;
      // counters of closed sessions may vanish: never draw a negative rate
      out.push({ t: q.t, a: Math.max(0, (q.a - p.a) / dt), b: Math.max(0, (q.b - p.b) / dt) });
    }
    return out;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function chart(box, label) {
    const W = 600;
    const H = 120;
    const r = rates();
    box.replaceChildren();
    const now = Date.now();
    const max = Math.max(1, ...r.map((x) => Math.max(x.a, x.b)));
    for (const f of [0.5, 1]) {
      box.appendChild(svg("line", { x1: 0, x2: W, y1: H - f * (H - 12), y2: H - f * (H - 12),
                                    class: "grid-line" }));
    }
    const top = svg("text", { x: 4, y: 24 });
    top.textContent = "peak " + label(max);
    box.appendChild(top);
    const since = svg("text", { x: 4, y: H - 4 });
    since.textContent = "5 min ago";
    box.appendChild(since);
    const now_ = svg("text", { x: W - 4, y: H - 4, "text-anchor": "end" });
    now_.textContent = "now";
    box.appendChild(now_);
    const x = (t) => W - ((now - t) / WINDOW_MS) * W;
    const y = (v) => H - (v / max) * (H - 12);
    for (const key of ["a", "b"]) {
      if (r.length < 1) break;
      const pts = r.map((s) => x(s.t).toFixed(1) + "," + y(s[key]).toFixed(1)).join(" ");
      box.appendChild(svg("polyline", { points: pts, class: key === "a" ? "in" : "out" }));
    }
    if (!r.length) {
      const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
      t.textContent = "collecting…";
      box.appendChild(t);
    }
    return r.length ? r[r.length - 1] : null;
  }

  // --- polling -------------------------------------------------------------------
  async function poll() {
    timer = null;
    const g = generation;
    let res;
    let st;
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      res = await fetch("/v1/status", { headers, cache: "no-store", credentials: "omit" });
      st = res.status === 401 ? null : await res.json().catch(() => undefined);
    } catch (e) {
      if (g !== generation) return;
      showError("the admin port does not answer: " + e.message);
      schedule();
      return;
    }
    if (g !== generation) return; // the token changed meanwhile: a newer poll runs
    if (res.status === 401) {
      askToken(token ? "The token was refused: enter the admin token again."
                     : "This admin port needs its bearer token.");
      return; // resumes when a token is entered
    }
    if (st === undefined) {
      showError("the status is not JSON (HTTP " + res.status + ")");
      schedule();
      return;
    }
    if (!res.ok) {
      showError("HTTP " + res.status + ": " + (st.error || ""));
      schedule();
      return;
    }
    $("auth").hidden = true;
    $("error").hidden = true;
    const k = st.nodeId !== undefined ? "node" : "server";
    if (k !== kind) samples = [];
    kind = k;
    $("node-view").hidden = k !== "node";
    $("server-view").hidden = k !== "server";
    if (k === "node") renderNode(st);
    else renderServer(st);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    schedule();
  }

  function showError(text) {
    const e = $("error");
    e.textContent = text;
    e.hidden = false;
    $("updated").textContent = "stale";
  }

  function schedule() {
    if (timer === null) timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("auth-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      token = $("token").value.trim();
      generation++;
      $("token").value = "";
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      $("forget").hidden = token === "";
      if (timer !== null) clearTimeout(timer);
      poll();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      token = "";
      generation++;
      $("forget").hidden = true;
      if (timer !== null) clearTimeout(timer);
      poll();
    });
    // A link with #token=... opened in this tab again does not reload it.
    window.addEventListener("hashchange", () => {
      if (!/(?:^#|&)token=/.test(location.hash)) return;
      takeToken();
      generation++;
      if (timer !== null) clearTimeout(timer);
      poll();
    });
    takeToken();
    poll();
  });
})();
