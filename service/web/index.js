// The list of searches (polled) and the form that starts one.
"use strict";

(() => {
  const { el, progressBar, statusBadge, formatNumber, timeElement, shortId } = SEGNAS;
  const POLL_MS = 2000;
  const EVALUATIONS_POLL_MS = 10000;

  // configs/tiny.yaml: a search that finishes in about a minute on a laptop.
  const EXAMPLE_SPEC = {
    name: "from-the-page",
    seed: 3,
    epochs: 2,
    reward: "miou",
    dataset: { kind: "digits", images: 200, size: 24, digit_size: [10, 14], max_digits: 2 },
    space: { layers: 3, channels: 8 },
    shared: { batch_size: 8, optimizer: "adam", max_steps: 6 },
    controller_phase: { steps: 3, batch_size: 8 },
    controller: { batch_size: 4 },
    derive: { samples: 6, max_batches: 2 },
    resources: { replicas: 1 },
  };

  const rows = document.getElementById("searches");
  const listState = document.getElementById("list-state");
  const form = document.getElementById("search-form");
  const nameInput = document.getElementById("name-input");
  const specInput = document.getElementById("spec-input");
  const submit = document.getElementById("submit");
  const formError = document.getElementById("form-error");

  // --- the list -------------------------------------------------------------------------

  function searchRow(search) {
    const page = (search.links && search.links.page) || `/searches/${search.id}`;
    const progress = search.progress;
    const best = search.best;
    const row = el(
      "tr",
      { class: "clickable", "data-id": search.id },
      el("td", { class: "mono" }, el("a", { href: page, title: search.id }, shortId(search.id))),
      el("td", {}, el("a", { href: page }, search.name || "(unnamed)")),
      el("td", {}, search.owner),
      el("td", {}, statusBadge(search.status),
        search.error ? el("span", { class: "row-error", title: search.error }, search.error) : null),
      el(
        "td",
        { class: "col-progress" },
        progressBar(progress ? progress.fraction : search.status === "succeeded" ? 1 : 0),
        progress ? el("span", { class: "progress-label" }, progressText(search, progress)) : null,
      ),
      el("td", { class: "num", title: "the search's reward function" },
        best ? formatNumber(best.reward) : "–",
        search.spec && search.spec.reward
          ? el("span", { class: "progress-label" }, search.spec.reward) : null),
      el("td", { class: "num" }, timeText(search)),
      el("td", {}, timeElement(search.created_at)),
      el("td", {}, pickBox(search)),
    );
    row.addEventListener("click", (event) => {
      if (!event.target.closest("a, input")) window.location.assign(page);
    });
    return row;
  }

  // Searches picked for /compare (kept across polls and pages), at most COMPARE_MAX.
  const COMPARE_MAX = 6;
  const picked = new Set();
  const compareButton = document.getElementById("compare");

  function pickBox(search) {
    const box = el("input", {
      type: "checkbox", "aria-label": `compare ${search.name || search.id}`, "data-pick": search.id,
    });
    box.checked = picked.has(search.id);
    box.addEventListener("change", () => {
      if (box.checked && picked.size >= COMPARE_MAX) box.checked = false;
      if (box.checked) picked.add(search.id);
      else picked.delete(search.id);
      showPicked();
    });
    return box;
  }

  function showPicked() {
    compareButton.disabled = picked.size < 2;
    compareButton.textContent = picked.size ? `Compare selected (${picked.size})` : "Compare selected";
  }

  compareButton.addEventListener("click", () => {
    if (picked.size >= 2) window.location.assign(`/compare?ids=${[...picked].join(",")}`);
  });

  /** How long it took, or has run and has left. */
  function timeText(search) {
    const { elapsed, remaining } = SEGNAS.searchTimes(search);
    if (elapsed === null) return "–";
    const ran = SEGNAS.formatDuration(elapsed);
    return remaining === null ? ran : `${ran} · ~${SEGNAS.formatDuration(remaining)} left`;
  }

  function progressText(search, p) {
    if (SEGNAS.isTerminal(search.status)) return `${Math.round(p.fraction * 100)}%`;
    return `epoch ${p.epoch + 1}/${p.epochs} · ${p.phase}`;
  }

  function renderList(items) {
    if (items.length === 0) {
      const filtered = list.q || list.status || list.cursors.length > 1;
      const text = filtered ? "No search matches." : "No searches yet: start one below.";
      rows.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 9 }, text)));
      return;
    }
    rows.replaceChildren(...items.map(searchRow));
  }

  // What the list shows: a filter (status, part of the name) and a page of it. ``cursors``
  // holds the ``after`` of each page walked to, the first page's null; the poll reloads the
  // last one.
  const list = { q: "", status: "", cursors: [null], next: null };
  const PAGE_SIZE = 20;
  const older = document.getElementById("page-older");
  const newer = document.getElementById("page-newer");

  function listURL() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (list.q) params.set("q", list.q);
    if (list.status) params.set("status", list.status);
    const after = list.cursors[list.cursors.length - 1];
    if (after) params.set("after", after);
    return `/searches?${params}`;
  }

  function refilter() {
    list.q = document.getElementById("filter-q").value.trim();
    list.status = document.getElementById("filter-status").value;
    list.cursors = [null];
    loadList();
  }

  let loads = 0; // a filter typed while a poll is out: only the latest answer is drawn

  async function loadList() {
    const mine = ++loads;
    try {
      const page = await SEGNAS.getJSON(listURL());
      if (mine !== loads) return;
      list.next = page.next || null;
      older.hidden = !list.next;
      newer.hidden = list.cursors.length < 2;
      renderList(page.items || []);
      listState.textContent = "";
      listState.classList.remove("warn");
    } catch (error) {
      listState.textContent = `cannot load the searches (${error.message}); retrying`;
      listState.classList.add("warn");
    }
  }

  async function pollList() {
    await loadList();
    window.setTimeout(pollList, POLL_MS);
  }

  older.addEventListener("click", () => {
    if (!list.next) return;
    list.cursors.push(list.next);
    loadList();
  });
  newer.addEventListener("click", () => {
    if (list.cursors.length > 1) list.cursors.pop();
    loadList();
  });
  document.getElementById("filter-q").addEventListener("input", refilter);
  document.getElementById("filter-status").addEventListener("change", refilter);
  document.getElementById("list-filter").addEventListener("submit", (e) => e.preventDefault());

  // --- the evaluations (shown once there is one) -----------------------------------------

  const evaluationsCard = document.getElementById("evaluations-card");
  const evaluationRows = document.getElementById("evaluations");

  function evaluationRow(evaluation) {
    const p = evaluation.progress;
    return el(
      "tr",
      { "data-id": evaluation.id },
      el("td", { class: "mono" },
        el("a", { href: evaluation.page, title: evaluation.id }, shortId(evaluation.id))),
      el("td", {}, el("a", { href: evaluation.page }, evaluation.name || "(unnamed)")),
      el("td", {}, statusBadge(evaluation.status)),
      el("td", { class: "num" }, `${p.searches_finished} / ${p.searches_planned}`),
      el("td", { class: "num" }, String(evaluation.settings.seeds ?? "–")),
      el("td", {}, timeElement(evaluation.created_at)),
    );
  }

  async function pollEvaluations() {
    try {
      const list = await SEGNAS.getJSON("/evaluations");
      const items = list.items || [];
      evaluationsCard.hidden = items.length === 0;
      evaluationRows.replaceChildren(...items.map(evaluationRow));
    } catch {
      // the searches' list says when the server cannot be reached
    } finally {
      window.setTimeout(pollEvaluations, EVALUATIONS_POLL_MS);
    }
  }

  // --- the form -------------------------------------------------------------------------

  // One key per distinct submission: a double click (or a retry after a network error) sends
  // the same key with the same body, so the server answers with the search it already made.
  // Editing the form starts a new submission.
  let idempotencyKey = SEGNAS.uuid();
  let sending = false;

  function showFormError(message, problems = []) {
    const list = problems.length
      ? el("ul", {}, problems.map((p) => el("li", {}, el("code", {}, p.loc), ": ", p.msg)))
      : null;
    formError.replaceChildren(el("p", {}, message), ...(list ? [list] : []));
    formError.hidden = false;
  }

  function clearFormError() {
    formError.hidden = true;
    formError.replaceChildren();
  }

  /** A spec the form cannot send as it is; its message says what to fix. */
  class SpecError extends Error {}

  /** The text as a spec mapping: JSON read here, anything else sent to the server's safe YAML
   * reader (POST /specs/parse). Throws an Error whose message says what to fix. */
  async function specOf(text) {
    const trimmed = text.trim();
    if (trimmed.startsWith("{")) {
      try {
        return JSON.parse(trimmed);
      } catch (error) {
        throw new SpecError(`The spec is not valid JSON: ${error.message}`);
      }
    }
    const response = await SEGNAS.api("/specs/parse", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ yaml: text }),
    });
    return (await SEGNAS.readJSON(response)).spec;
  }

  /** The body to send, or throws an Error whose message says what to fix. */
  async function readSpec() {
    const spec = await specOf(specInput.value);
    if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
      throw new SpecError("The spec must be a mapping of settings (a JSON object), like the example.");
    }
    const name = nameInput.value.trim();
    return name ? { ...spec, name } : spec;
  }

  // The configs this server ships, to start from (GET /specs/presets), as their YAML.
  const presetPick = document.getElementById("preset");
  let presets = [];

  async function loadPresets() {
    try {
      presets = (await SEGNAS.getJSON("/specs/presets")).items || [];
    } catch {
      return; // the form works without them
    }
    for (const p of presets) {
      presetPick.append(el("option", { value: p.name }, `configs/${p.name}.yaml`));
    }
  }

  presetPick.addEventListener("change", () => {
    const preset = presets.find((p) => p.name === presetPick.value);
    document.getElementById("preset-note").textContent = preset ? preset.description : "";
    specInput.value = preset ? preset.yaml : JSON.stringify(EXAMPLE_SPEC, null, 2);
    onEdit();
  });

  function problemsOf(body) {
    const errors = body && Array.isArray(body.errors) ? body.errors : [];
    // "body" only says the problem is in the request's body: the spec is the body.
    const where = (loc) => (loc[0] === "body" && loc.length > 1 ? loc.slice(1) : loc).join(".");
    return errors.map((e) => ({
      loc: Array.isArray(e.loc) ? where(e.loc) : String(e.loc ?? ""),
      msg: String(e.msg ?? ""),
    }));
  }

  async function onSubmit(event) {
    event.preventDefault();
    if (sending) return;
    clearFormError();
    setSending(true);
    try {
      const spec = await readSpec();
      const response = await SEGNAS.api("/searches", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey },
        body: JSON.stringify(spec),
      });
      const search = await SEGNAS.readJSON(response);
      window.location.assign((search.links && search.links.page) || `/searches/${search.id}`);
      return; // keep the button disabled while the browser leaves
    } catch (error) {
      if (error instanceof SpecError) {
        showFormError(error.message);
      } else if (error instanceof SEGNAS.ApiError) {
        const what = error.status >= 500 ? `Server error (${error.status}): ` : "";
        showFormError(what + error.message, problemsOf(error.body));
      } else {
        showFormError(`Cannot reach the server: ${error.message}`);
      }
    }
    setSending(false);
  }

  function setSending(on) {
    sending = on;
    submit.disabled = on;
    submit.textContent = on ? "Starting…" : "Start search";
  }

  function onEdit() {
    idempotencyKey = SEGNAS.uuid();
  }

  // Back from a search's page restores this page as it was left: submitting again is a new
  // submission, and the button must work again.
  function onPageShow(event) {
    if (!event.persisted) return;
    idempotencyKey = SEGNAS.uuid();
    setSending(false);
  }

  const clone = SEGNAS.takeClone(); // "New search from it" on a search's page
  specInput.value = JSON.stringify(clone ? clone.spec : EXAMPLE_SPEC, null, 2);
  if (clone) {
    nameInput.value = clone.name || "";
    form.scrollIntoView();
    specInput.focus();
  }
  form.addEventListener("submit", onSubmit);
  specInput.addEventListener("input", onEdit);
  nameInput.addEventListener("input", onEdit);
  window.addEventListener("pageshow", onPageShow);
  pollList();
  pollEvaluations();
  loadPresets();
})();
