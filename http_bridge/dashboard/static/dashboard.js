// The amqprpc dashboard: polls state.json and renders it. Data goes in as text, never as HTML.
"use strict";
(function () {
  const POLL_MS = 2000;
  const KEY = "amqprpc-dashboard-credential";
  let timer = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(child === null || child === undefined ? "–" : String(child)));
    }
    return node;
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "–";
    return Number(value).toFixed(digits);
  }

  function ago(seconds) {
    const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  function headers() {
    const credential = sessionStorage.getItem(KEY);
    if (!credential) return {};
    return credential.split(".").length === 3 ? { "Authorization": "Bearer " + credential } : { "X-API-Key": credential };
  }

  function table(head, rows) {
    return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
  }

  function service(s) {
    const section = el("section", { "class": "service" + (s.live ? "" : " down"), "data-service": s.name },
      el("h2", {}, s.name, el("span", { "class": "badge" }, s.live ? s.instances.length + " live" : "down " + ago(Date.now() / 1000 - s.down_for)),
        s.version ? el("small", {}, "v" + s.version) : ""));
    section.append(el("h3", {}, "Instances"), table(["host", "pid", "version", "since", "instance"], s.instances.map((i) =>
      el("tr", { "data-instance": i.id }, el("td", {}, i.host), el("td", { "class": "num" }, i.pid), el("td", {}, i.version || "–"),
        el("td", {}, ago(i.since)), el("td", {}, el("code", {}, i.id.slice(0, 8)))))));
    section.append(el("h3", {}, "Methods"), table(["method", "route", "roles", "calls/s", "errors", "p50 ms", "p99 ms"], s.methods.map((m) =>
      el("tr", { "data-method": s.name + "." + m.name },
        el("td", {}, el("code", {}, m.name)), el("td", {}, m.http ? el("code", {}, m.http) : "–"),
        el("td", {}, m.public ? "public" : (m.roles.length ? m.roles.join(", ") : "–")),
        el("td", { "class": "num calls", "data-calls": m.calls }, num(m.calls_per_s, 2)),
        el("td", { "class": "num" + (m.errors ? " errors" : "") }, (100 * m.error_rate).toFixed(1) + " %"),
        el("td", { "class": "num" }, num(m.p50_ms, 1)), el("td", { "class": "num" }, num(m.p99_ms, 1))))));
    if (s.queues.length) {
      section.append(el("h3", {}, "Queues"), table(["queue", "messages", "consumers"], s.queues.map((q) =>
        el("tr", { "data-queue": q.name }, el("td", {}, el("code", {}, q.name)),
          el("td", { "class": "num" + (q.dead_letter && q.messages ? " dlq-full" : "") }, q.messages),
          el("td", { "class": "num" }, q.consumers)))));
    }
    return section;
  }

  function render(state) {
    const live = state.services.filter((s) => s.live);
    document.getElementById("summary").textContent =
      live.length + " live services, " + live.reduce((n, s) => n + s.instances.length, 0) + " instances";
    document.getElementById("updated").textContent = "updated " + new Date(state.generated_at * 1000).toLocaleTimeString();
    const windowed = state.services.find((s) => s.window);
    if (windowed) document.getElementById("window").textContent = windowed.window;
    document.getElementById("services").replaceChildren(...state.services.map(service));
    const breakers = document.getElementById("breakers-section");
    breakers.hidden = state.breakers.length === 0;
    document.querySelector("#breakers tbody").replaceChildren(...state.breakers.map((b) =>
      el("tr", {}, el("td", {}, b.service), el("td", {}, el("code", {}, b.instance.slice(0, 8))), el("td", {}, b.name),
        el("td", { "class": "state-" + b.state }, b.state.replace("_", " ")))));
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function askForCredential(reason) {
    document.getElementById("login-reason").textContent = reason;
    document.getElementById("login").hidden = false;
  }

  async function poll() {
    try {
      const response = await fetch("/dashboard/state.json", { headers: headers(), cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => ({}));
        askForCredential((body.error && body.error.message) || "This page needs credentials.");
        return;  // polling resumes after the form is sent
      }
      if (!response.ok) throw new Error("state.json answered " + response.status);
      document.getElementById("login").hidden = true;
      render(await response.json());
    } catch (error) {
      document.getElementById("updated").textContent = "not updated: " + error.message;
    }
    timer = setTimeout(poll, POLL_MS);
  }

  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("credential").value.trim());
    clearTimeout(timer);
    poll();
  });
  poll();
})();
