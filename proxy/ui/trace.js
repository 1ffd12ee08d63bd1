// The trace pages of tts-proxy: plain DOM and SVG, no libraries, nothing fetched but the proxy's
// own /v1/tts/traces JSON (with the API key the user gives, kept for this tab only).
"use strict";
const TtsTrace = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cell(row, text) {
    const td = row.insertCell();
    td.textContent = text;
    return td;
  }

  async function getJson(path) {
    const key = sessionStorage.getItem("tts-key");
    const response = await fetch(path, { headers: key ? { Authorization: "Bearer " + key } : {} });
    if (response.status === 401) {
      askKey();
      throw new Error("an API key is needed");
    }
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
    return body;
  }

  function askKey() {
    const form = $("key-form");
    form.hidden = false;
    form.onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem("tts-key", $("key").value);
      location.reload();
    };
  }

  async function load(path, view, render) {
    try {
      const data = await getJson(path);
      render(data);
      $("status").hidden = true;
      $(view).hidden = false;
    } catch (error) {
      $("status").textContent = "Could not load: " + error.message;
    }
  }

  // Score in [0, 1] -> red .. amber .. green; unscored nodes grey.
  function colour(score) {
    if (score === null || score === undefined) return "#c7ccd6";
    const hue = Math.round(120 * Math.max(0, Math.min(1, score)));
    return `hsl(${hue}, 65%, 48%)`;
  }

  // Leaves get rows in depth-first order; a parent sits at the middle of its children.
  function layout(nodes) {
    const children = new Map();
    const roots = [];
    for (const n of nodes) {
      if (n.parent_id === null || !byId.has(n.parent_id)) roots.push(n);
      else {
        if (!children.has(n.parent_id)) children.set(n.parent_id, []);
        children.get(n.parent_id).push(n);
      }
    }
    let row = 0;
    const y = new Map();
    const place = (n) => {
      const kids = children.get(n.node_id) || [];
      if (!kids.length) {
        y.set(n.node_id, row++);
        return;
      }
      kids.forEach(place);
      const ys = kids.map((k) => y.get(k.node_id));
      y.set(n.node_id, (Math.min(...ys) + Math.max(...ys)) / 2);
    };
    roots.forEach(place);
    return { y, rows: row };
  }

  let byId = new Map();

  function winningPath(nodes) {
    const win = new Set();
    for (const n of nodes) {
      if (n.choice !== 0) continue;
      let cur = n;
      while (cur && !win.has(cur.node_id)) {
        win.add(cur.node_id);
        cur = cur.parent_id === null ? null : byId.get(cur.parent_id);
      }
    }
    return win;
  }

  function drawTree(trace) {
    const nodes = trace.nodes;
    byId = new Map(nodes.map((n) => [n.node_id, n]));
    const { y, rows } = layout(nodes);
    const win = winningPath(nodes);
    const depths = Math.max(0, ...nodes.map((n) => n.depth)) + 1;
    // 16 px per leaf; big trees are packed tighter (down to 9 px) so more of them fits a screen.
    const dx = Math.max(70, Math.min(140, 1100 / depths)), left = 40, top = 24;
    const dy = rows > 56 ? Math.max(9, 900 / rows) : 16, radius = Math.min(6, dy / 2 - 0.5);
    const svg = $("tree");
    svg.setAttribute("width", left * 2 + dx * (depths - 1) + 180);
    svg.setAttribute("height", top * 2 + dy * Math.max(rows - 1, 0));
    const px = (n) => left + dx * n.depth, py = (n) => top + dy * y.get(n.node_id);
    for (let d = 0; d < depths; d++) svg.append(el("text", { x: left + dx * d - 12, y: 12 }, `depth ${d}`));
    for (const n of nodes) {
      const parent = n.parent_id === null ? undefined : byId.get(n.parent_id);
      if (!parent) continue;
      const cls = ["edge", win.has(n.node_id) ? "win" : "", n.status === "pruned" ? "faded" : ""];
      const mid = (px(parent) + px(n)) / 2;
      svg.append(el("path", {
        class: cls.join(" ").trim(),
        d: `M${px(parent)},${py(parent)} C${mid},${py(parent)} ${mid},${py(n)} ${px(n)},${py(n)}`,
      }));
    }
    for (const n of nodes) {
      const cls = ["node", n.status, win.has(n.node_id) ? "win" : "",
                   n.status === "pruned" || n.status === "duplicate" ? "faded" : ""];
      const circle = el("circle", {
        class: cls.join(" ").replace(/\s+/g, " ").trim(), cx: px(n), cy: py(n), r: radius,
        fill: colour(n.score), "data-node-id": n.node_id, "data-status": n.status,
      });
      circle.append(el("title", {}, describe(n)));
      circle.addEventListener("click", () => select(circle, n));
      svg.append(circle);
      if (n.answer !== null && n.answer !== undefined) {
        svg.append(el("text", { x: px(n) + 10, y: py(n) + 4, class: "leaf-answer" },
                      (n.answer || "(no answer)").slice(0, 24)));
      }
    }
  }

  function describe(n) {
    const score = n.score === null ? "unscored" : n.score.toFixed(3);
    const lines = [`node ${n.node_id} · depth ${n.depth} · ${n.status} · score ${score}`];
    if (n.call_id !== null) lines.push(`generated by call ${n.call_id}`);
    if (n.answer !== null) lines.push(`answer: ${n.answer || "(none)"} (rank ${n.choice})`);
    lines.push(n.text === null ? "(step text not stored: PROXY_STORE_TEXT)" : n.text);
    return lines.join("\n");
  }

  function select(circle, n) {
    document.querySelectorAll(".node.selected").forEach((c) => c.classList.remove("selected"));
    circle.classList.add("selected");
    $("detail").textContent = describe(n);
  }

  function drawAnswers(trace) {
    const body = $("answers").tBodies[0];
    trace.answers.forEach((a, i) => {
      const row = body.insertRow();
      row.className = i === 0 ? "answer chosen" : "answer";
      if (i === 0) row.id = "chosen-answer";
      cell(row, i === 0 ? "chosen" : String(i + 1));
      cell(row, a.answer || "(no answer)");
      cell(row, String(a.votes));
      cell(row, a.weight.toFixed(3));
    });
  }

  function drawTimeline(trace) {
    const calls = trace.calls;
    const svg = $("timeline");
    const end = Math.max(1, ...calls.map((c) => c.ended_ms));
    const width = 1000, left = 150, dy = 14;
    svg.setAttribute("width", left + width + 20);
    svg.setAttribute("height", 30 + dy * calls.length);
    const sx = (ms) => left + (width * ms) / end;
    const spent = { policy: 0, scorer: 0 };
    calls.forEach((c, i) => {
      spent[c.kind] += c.ended_ms - c.started_ms;
      const yy = 20 + i * dy;
      svg.append(el("text", { x: 4, y: yy + 9 }, `${c.kind} · round ${c.round}`));
      const bar = el("rect", {
        class: `bar ${c.kind}${c.is_completed ? "" : " cut"}`, x: sx(c.started_ms), y: yy,
        width: Math.max(1, sx(c.ended_ms) - sx(c.started_ms)), height: dy - 3,
      });
      bar.append(el("title", {}, `call ${c.call_id}: ${c.kind}, ${c.samples} samples, ` +
        `${c.completion_tokens} tokens, ${(c.ended_ms - c.started_ms).toFixed(1)} ms` +
        (c.is_completed ? "" : " (cut off)")));
      svg.append(bar);
    });
    svg.append(el("text", { x: left, y: 12 }, "0 ms"));
    svg.append(el("text", { x: left + width - 60, y: 12 }, `${end.toFixed(0)} ms`));
    $("time-split").textContent =
      `policy calls ${spent.policy.toFixed(0)} ms · scorer calls ${spent.scorer.toFixed(0)} ms ` +
      `(summed; calls may overlap) · request ${trace.latency_ms.toFixed(0)} ms`;
  }

  function drawSummary(trace) {
    $("title").textContent = `Search trace · ${trace.request_id}`;
    const facts = [
      ["model", trace.model], ["method", trace.strategy],
      ["requested", trace.requested_strategy], ["budget", trace.budget],
      ["scorer", trace.scorer || "none"], ["voting", trace.voting],
      ["answer", trace.answer || "(none)"], ["nodes", trace.nodes.length + (trace.is_truncated ? "+ (cut)" : "")],
      ["tokens", `${trace.prompt_tokens} prompt · ${trace.completion_tokens} generated`],
      ["latency", `${trace.latency_ms.toFixed(0)} ms`],
    ];
    const box = $("summary");
    for (const [k, v] of facts) {
      const span = document.createElement("span");
      const b = document.createElement("b");
      b.textContent = k + ": ";
      span.append(b, String(v));
      box.append(span);
    }
    if (trace.question) {
      const q = document.createElement("p");
      q.textContent = "Question: " + trace.question;
      box.append(q);
    }
    $("legend").innerHTML = "";
    for (const [label, s] of [["score 0", 0], ["0.5", 0.5], ["1", 1], ["unscored", null]]) {
      const span = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour(s);
      span.append(dot, label);
      $("legend").append(span);
    }
  }

  function showTrace(requestId) {
    $("back").hidden = false;
    load(`/v1/tts/traces/${encodeURIComponent(requestId)}`, "trace-view", (trace) => {
      drawSummary(trace);
      drawTree(trace);
      drawAnswers(trace);
      drawTimeline(trace);
      document.body.dataset.ready = "true";
    });
  }

  function showList() {
    load("/v1/tts/traces?limit=200", "list-view", (list) => {
      const body = $("list").tBodies[0];
      for (const t of list.data) {
        const row = body.insertRow();
        row.className = "trace-row";
        const link = document.createElement("a");
        link.href = `/ui/traces/${encodeURIComponent(t.request_id)}`;
        link.textContent = t.request_id;
        row.insertCell().append(link);
        cell(row, new Date(t.created * 1000).toLocaleString());
        cell(row, t.model);
        cell(row, t.strategy);
        cell(row, t.answer || "(none)");
        cell(row, String(t.nodes));
        cell(row, `${t.latency_ms.toFixed(0)} ms`);
      }
      if (!list.data.length) $("status").textContent = "No searches yet.";
      document.body.dataset.ready = "true";
    });
  }

  // /ui/traces/{request_id}: one search; /ui/traces: the recent ones.
  function start(path) {
    const match = /^\/ui\/traces\/(.+)$/.exec(path);
    if (match) showTrace(decodeURIComponent(match[1]));
    else showList();
  }

  return { start };
})();
