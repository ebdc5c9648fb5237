// The live topology page: draws GET /api/v1/topology with Cytoscape.js every 2 s, lists
// recent denies, services and links, and runs traces (GET /api/v1/trace). A trace in the
// address (/?src=10.0.0.1&dst=10.0.0.3&proto=tcp&dport=22) runs when the page opens.
"use strict";

const REFRESH_MS = 2000;
let cy = null;
let shape = ""; // the node ids last laid out: a new layout only when they change

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function rate(bps) {
  if (bps === null || bps === undefined) return "-";
  const units = [["Gbit/s", 1e9], ["Mbit/s", 1e6], ["kbit/s", 1e3]];
  for (const [unit, size] of units) if (bps >= size) return (bps / size).toFixed(1) + " " + unit;
  return Math.round(bps) + " bit/s";
}

function shortDpid(dpid) {
  return dpid.replace(/^0+(?=.)/, "");
}

function switchLabel(data, dpid) {
  const s = data.switches.find((x) => x.dpid === dpid);
  return (s && s.name) || "dpid " + shortDpid(dpid);
}

function elements(data) {
  const out = [];
  for (const s of data.switches) {
    out.push({ data: { id: "s:" + s.dpid, label: s.name || shortDpid(s.dpid), kind: "switch" } });
  }
  for (const l of data.links) {
    const load = Math.max(l.a_to_b_bps || 0, l.b_to_a_bps || 0);
    out.push({
      data: {
        id: `l:${l.a}:${l.a_port}-${l.b}:${l.b_port}`,
        source: "s:" + l.a,
        target: "s:" + l.b,
        label: rate(load),
        width: 1 + Math.min(9, Math.log10(1 + load)),
        kind: "link",
      },
    });
  }
  for (const h of data.hosts) {
    out.push({ data: { id: "h:" + h.mac, label: h.ip || h.mac, kind: "host" } });
    const load = Math.max(h.to_host_bps || 0, h.from_host_bps || 0);
    out.push({
      data: {
        id: "e:" + h.mac,
        source: "s:" + h.switch,
        target: "h:" + h.mac,
        label: rate(load),
        width: 1 + Math.min(9, Math.log10(1 + load)),
        kind: "edge",
      },
    });
  }
  for (const v of data.vnfs || []) {
    const id = `v:${v.deployment}/${v.replica}`;
    out.push({ data: { id, label: `${v.deployment}[${v.replica}]`, kind: "vnf" } });
    out.push({ data: { id: "e:" + id, source: "s:" + v.switch, target: id, kind: "edge", width: 1 } });
  }
  for (const w of data.waypoints || []) {
    const id = "w:" + w.name;
    out.push({ data: { id, label: w.name, kind: "waypoint" } });
    if (w.switch) {
      out.push({ data: { id: "e:" + id, source: "s:" + w.switch, target: id, kind: "edge", width: 1 } });
    }
  }
  return out;
}

function drawGraph(data) {
  const box = document.getElementById("graph");
  if (typeof cytoscape === "undefined") {
    box.textContent = "The graph library is not installed (run scripts/setup.sh); tables only.";
    return;
  }
  const els = elements(data);
  if (cy === null) {
    cy = cytoscape({
      container: box,
      elements: [],
      style: [
        { selector: "node", style: { label: "data(label)", "font-size": 11, "text-valign": "bottom" } },
        { selector: 'node[kind = "switch"]', style: { shape: "round-rectangle", "background-color": "#37474f", width: 34, height: 24 } },
        { selector: 'node[kind = "host"]', style: { "background-color": "#66bb6a", width: 16, height: 16 } },
        { selector: 'node[kind = "vnf"]', style: { shape: "diamond", "background-color": "#ffa726" } },
        { selector: 'node[kind = "waypoint"]', style: { shape: "hexagon", "background-color": "#ab47bc" } },
        { selector: "edge", style: { width: "data(width)", "line-color": "#90a4ae", label: "data(label)", "font-size": 9, "text-rotation": "autorotate", color: "#455a64" } },
        { selector: 'edge[kind = "link"]', style: { "line-color": "#1e88e5" } },
      ],
    });
  }
  const ids = new Set(els.map((e) => e.data.id));
  cy.elements().forEach((e) => { if (!ids.has(e.id())) e.remove(); });
  for (const e of els) {
    const have = cy.getElementById(e.data.id);
    if (have.nonempty()) have.data(e.data);
    else cy.add(e);
  }
  const now = [...ids].sort().join(",");
  if (now !== shape) {
    shape = now;
    cy.layout({ name: "cose", animate: false, randomize: false, nodeRepulsion: 8000, idealEdgeLength: 60 }).run();
  }
  box.dataset.nodes = cy.nodes().length;
  box.dataset.edges = cy.edges().length;
  box.dataset.rendered = "cytoscape";
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
}

function ruleText(rule) {
  if (!rule) return "";
  const where = rule.file ? `${rule.file.split("/").pop()}:${rule.line ?? "?"}` : "";
  const what = rule.policy ? `${rule.kind} ${rule.policy} ${rule.direction} rule ${rule.rule}` : rule.kind;
  return [what, where, rule.text || rule.description || ""].filter(Boolean).join(" ");
}

function drawTables(data) {
  fillTable(
    "denies",
    data.denies.map((d) => {
      const to = d.dport === null ? d.proto : `${d.proto}/${d.dport}`;
      const where = `${switchLabel(data, d.switch)} ${d.port_name || "port " + d.port}`;
      return row([d.time.slice(11, 23), where, `${d.src} → ${d.dst} ${to}`, el("td", ruleText(d.rule), { class: "rule" })], { "data-deny": `${d.src}-${d.dst}-${to}` });
    }),
  );
  const services = [];
  for (const s of data.services || []) {
    const split = (s.routes[0] || { split: {} }).split;
    const total = s.observed ? Object.values(s.observed).reduce((a, b) => a + b, 0) : 0;
    for (const b of s.backends) {
      const seen = s.observed ? s.observed[b.endpoint] : null;
      const observed = seen === null ? "(the waypoint picks)" : `${seen} (${total ? ((100 * seen) / total).toFixed(1) : "0.0"}%)`;
      services.push(row([`${s.name} ${s.vip}:${s.port}`, b.endpoint + (b.live ? "" : " (down)"), `${split[b.endpoint] ?? 0}%`, observed], { "data-service": s.name, "data-backend": b.endpoint }));
    }
  }
  fillTable("services", services);
  fillTable(
    "links",
    data.links.map((l) =>
      row([`${switchLabel(data, l.a)}:${l.a_port} ↔ ${switchLabel(data, l.b)}:${l.b_port}`, rate(l.a_to_b_bps), rate(l.b_to_a_bps)], { "data-link": `${l.a}:${l.a_port}-${l.b}:${l.b_port}` }),
    ),
  );
  document.getElementById("summary").textContent =
    `${data.switches.length} switches, ${data.links.length} links, ${data.hosts.length} hosts` +
    ((data.vnfs || []).length ? `, ${data.vnfs.length} VNF replicas` : "") +
    ((data.waypoints || []).length ? `, ${data.waypoints.length} waypoints` : "");
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const reply = await fetch("/api/v1/topology", { cache: "no-store" });
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    const data = await reply.json();
    drawTables(data);
    drawGraph(data);
    status.textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString();
    status.className = "";
  } catch (err) {
    status.textContent = "cannot reach the controller: " + err.message;
    status.className = "error";
  }
}

// One hop of a trace: where, what became of the packet, and where the answer came from (the
// switch's own ofproto/trace, the controller's model, or both), with the notes saying why.
function hopItem(h) {
  const li = el("li", `${h.switch || h.dpid} in port ${h.in_port}: ${h.result} `, { "data-hop": h.dpid });
  const source = h.source || "unknown";
  li.appendChild(el("span", `(${source})`, { class: "source " + source.replace("+", "-"), "data-source": source }));
  const notes = [...(h.unasked ? [`not asked: ${h.unasked}`] : []), ...(h.error ? [h.error] : []), ...(h.notes || [])];
  if (notes.length) {
    const list = el("ul", null, { class: "notes" });
    for (const n of notes) list.appendChild(el("li", n, { class: "note" }));
    li.appendChild(list);
  }
  return li;
}

async function trace(params) {
  const out = document.getElementById("trace-result");
  out.replaceChildren(el("p", "tracing…"));
  const reply = await fetch("/api/v1/trace?" + params.toString(), { cache: "no-store" });
  const body = await reply.json();
  if (!reply.ok) {
    out.replaceChildren(el("p", body.error, { class: "verdict drop" }));
    return;
  }
  const p = body.packet;
  const head = el("p", `${p.src} → ${p.dst} ${p.proto}${p.dport ? "/" + p.dport : ""}: `);
  head.appendChild(el("span", body.verdict.toUpperCase(), { class: "verdict " + body.verdict, id: "trace-verdict" }));
  const parts = [head];
  const d = body.decided_by;
  if (d) {
    parts.push(el("p", `decided by ${d.switch || d.dpid} table ${d.table} (${d.stage}, ${d.app})`));
    if (d.rule) parts.push(el("p", ruleText(d.rule), { class: "rule", id: "trace-rule" }));
  }
  const hops = el("ol", null, { id: "trace-hops" });
  for (const h of body.hops) hops.appendChild(hopItem(h));
  parts.push(hops);
  out.replaceChildren(...parts);
}

function start() {
  const form = document.getElementById("trace-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams(new FormData(form));
    if (!params.get("dport")) params.delete("dport");
    history.replaceState(null, "", "/?" + params.toString());
    trace(params);
  });
  const asked = new URLSearchParams(location.search);
  if (asked.get("src") && asked.get("dst")) {
    for (const [k, v] of asked) if (form.elements[k]) form.elements[k].value = v;
    trace(asked);
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
