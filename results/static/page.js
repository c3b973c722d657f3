// The results page: cards from /api/results, kept current by /api/stream (server-sent events).
// Every value from the API reaches the document through textContent or setAttribute, never as
// markup, so an object key such as "<script>..." shows as the text it is.
"use strict";

const state = { filters: {}, reloading: null };
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function query(extra) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries({ ...state.filters, ...extra })) {
    if (value !== "" && value !== undefined && value !== null) params.set(name, value);
  }
  return params.toString();
}

function cardId(bucket, key, version) {
  return JSON.stringify([bucket, key, version]);
}

function score(value) {
  return typeof value === "number" ? value.toFixed(3) : "n/a";
}

function renderResult(result) {
  const box = el("section", "result");
  box.dataset.function = result.function || "";
  const head = el("div", "fn");
  head.append(el("b", "function", result.function || result.kind));
  const detail = [result.model, typeof result.latency_ms === "number" ? `${Math.round(result.latency_ms)} ms` : null];
  head.append(el("span", "model", detail.filter(Boolean).join(" · ")));
  box.append(head);
  if (result.labels.length) {
    const list = el("ol", "labels");
    for (const label of result.labels.slice(0, 3)) {
      const item = el("li", "label");
      const bar = el("span", "bar");
      bar.style.width = `${Math.max(0, Math.min(1, label.score || 0)) * 100}%`;
      item.append(bar, el("span", "name", label.name), el("span", "score", score(label.score)));
      list.append(item);
    }
    box.append(list);
  }
  if (result.flagged !== null || result.verdict) {
    const text = result.verdict || (result.flagged ? "flagged" : "not flagged");
    const badge = el("span", result.flagged ? "verdict bad" : "verdict", text);
    if (typeof result.score === "number") badge.textContent += ` (${score(result.score)})`;
    box.append(badge);
  }
  const timings = Object.entries(result.timings || {});
  if (timings.length) {
    const list = el("ul", "timings");
    for (const [stage, ms] of timings) list.append(el("li", "timing", `${stage}: ${Math.round(ms)} ms`));
    box.append(list);
  }
  return box;
}

function renderCard(card) {
  const node = el("article", "card");
  node.dataset.id = cardId(card.bucket, card.key, card.version);
  node.dataset.key = card.key;
  if (card.flagged) node.classList.add("flagged");
  if (card.dead_lettered) node.classList.add("dead-lettered");
  const img = el("img", "thumb");
  img.alt = card.key;
  img.loading = "lazy";
  img.src = card.thumbnail;
  img.addEventListener("error", () => img.classList.add("missing"), { once: true });
  const body = el("div", "body");
  body.append(el("div", "key", card.key));
  const version = card.version_id ? `version ${card.version_id}` : card.etag ? `ETag ${card.etag}` : "";
  body.append(el("div", "where", [card.bucket, version].filter(Boolean).join(" · ")));
  for (const result of card.results) body.append(renderResult(result));
  for (const dead of card.dead_letters) {
    body.append(el("div", "dead", `dead-lettered${dead.function ? ` at ${dead.function}` : ""}: ${dead.error || ""}`));
  }
  node.append(img, body);
  return node;
}

function showCount() {
  const count = $("cards").children.length;
  $("empty").hidden = count > 0;
  $("status").textContent = `${count} object${count === 1 ? "" : "s"}`;
}

async function getJson(url) {
  const answer = await fetch(url, { headers: { accept: "application/json" } });
  if (!answer.ok) throw new Error(`${url}: HTTP ${answer.status}`);
  return answer.json();
}

async function reload() {
  const answer = await getJson(`/api/results?${query()}`);
  $("cards").replaceChildren(...answer.objects.map(renderCard));
  showCount();
  document.body.dataset.loaded = String(Date.now());
}

async function refreshAgreement() {
  const figures = await getJson("/api/agreement");
  const text = figures.compared
    ? `classifier agreement: ${figures.agree} of ${figures.compared} objects seen by two or more classifiers have the same top label (${Math.round(figures.rate * 100)}%)`
    : `classifier agreement: no object seen by two classifiers yet (${figures.objects} classified)`;
  $("agreement").textContent = text;
}

async function refreshFunctions() {
  const select = $("f-function");
  const current = select.value;
  const names = await getJson("/api/functions");
  const options = [el("option", null, "any")];
  options[0].value = "";
  for (const name of names) {
    const option = el("option", null, name);
    option.value = name;
    options.push(option);
  }
  select.replaceChildren(...options);
  select.value = names.includes(current) ? current : "";
}

// One object changed: ask for its card under the current filters; it shows (at the top) when
// it matches and goes away when it no longer does.
async function update(id) {
  const answer = await getJson(`/api/results?${query({ bucket: id.bucket, key: id.key, version: id.version })}`);
  const wanted = cardId(id.bucket, id.key, id.version);
  const old = [...$("cards").children].find((node) => node.dataset.id === wanted);
  if (old) old.remove();
  if (answer.objects.length) {
    const node = renderCard(answer.objects[0]);
    node.classList.add("fresh");
    $("cards").prepend(node);
  }
  showCount();
}

function readFilters() {
  state.filters = {
    label: $("f-label").value.trim(),
    function: $("f-function").value,
    flagged: $("f-flagged").value,
    dead_lettered: $("f-dead").value,
  };
  const url = new URL(window.location.href);
  url.search = query();
  window.history.replaceState(null, "", url);
}

function applyFilters() {
  readFilters();
  clearTimeout(state.reloading);
  state.reloading = setTimeout(() => reload().catch(showError), 150);
}

function showError(error) {
  $("status").textContent = `error: ${error.message}`;
}

function listen() {
  const source = new EventSource("/api/stream");
  let dropped = false;
  source.addEventListener("result", (message) => {
    const id = JSON.parse(message.data);
    update(id).catch(showError);
    refreshAgreement().catch(showError);
    refreshFunctions().catch(showError);
  });
  source.addEventListener("error", () => { dropped = true; });
  // After a reconnect, results that arrived meanwhile are only in the list: reload it.
  source.addEventListener("open", () => {
    document.body.dataset.live = "true";
    if (dropped) reload().catch(showError);
    dropped = false;
  });
}

function start() {
  const params = new URLSearchParams(window.location.search);
  $("f-label").value = params.get("label") || "";
  $("f-flagged").value = params.get("flagged") || "";
  $("f-dead").value = params.get("dead_lettered") || "";
  refreshFunctions()
    .then(() => {
      $("f-function").value = params.get("function") || "";
      readFilters();
      return reload();
    })
    .catch(showError);
  refreshAgreement().catch(showError);
  $("filters").addEventListener("input", applyFilters);
  $("filters").addEventListener("change", applyFilters);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); applyFilters(); });
  listen();
}

document.addEventListener("DOMContentLoaded", start);
