// One search's page: polls the search (with its ETag) and redraws what changed.
"use strict";

(() => {
  const { el, formatNumber, archString, isTerminal } = SEGNAS;
  const POLL_MS = 1500;
  const PAGE_ROWS = 20;
  const SCATTER_ROWS = 500; // the latest samples the size chart draws
  const SCATTER_EVERY_MS = 10000; // while a search runs, the chart is redrawn at most this often
  const CANCELLABLE = new Set(["queued", "running"]);
  const METRICS = [
    ["accuracy", "accuracy"],
    ["mean_precision", "mean precision"],
    ["mean_recall", "mean recall"],
    ["miou", "mIoU"],
    ["miou_plus", "mIoU+"],
  ];

  const searchId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const base = `/searches/${encodeURIComponent(searchId)}`;
  const $ = (id) => document.getElementById(id);

  let etag = null;
  let search = null;
  let detailsFinal = false; // the terminal state's last refresh of rewards/samples/result is done
  let rewardPoints = [];
  let rewardNext = null; // the reward curve's cursor: later polls ask only for newer steps

  // --- header and progress ----------------------------------------------------------------

  function renderSpec(s) {
    $("spec").textContent = JSON.stringify(s.spec, null, 2);
    $("clone").disabled = false;
  }

  /** To the start form with this search's spec in it, to edit and submit as a new one. */
  function cloneSearch() {
    if (!search) return;
    const { name, ...spec } = search.spec;
    SEGNAS.stashClone({ name: `${name || search.name || "search"} (copy)`, spec });
    window.location.assign("/#search-form");
  }

  function renderHeader(s) {
    document.title = `${s.name || s.id} · segnas`;
    $("search-name").textContent = s.name || "(unnamed search)";
    $("search-id").textContent = s.id;
    const status = $("status");
    status.textContent = s.status;
    status.className = `badge badge-${s.status}`;
    $("created-at").replaceChildren(SEGNAS.timeElement(s.created_at));
    $("started-at").replaceChildren(SEGNAS.timeElement(s.started_at));
    $("finished-at").replaceChildren(SEGNAS.timeElement(s.finished_at));
    const error = $("error");
    error.hidden = !s.error;
    error.textContent = s.error ? `error: ${s.error}` : "";
    $("cancel").hidden = !CANCELLABLE.has(s.status);
  }

  function renderProgress(s) {
    const p = s.progress;
    $("p-epoch").textContent = p ? `${Math.min(p.epoch + 1, p.epochs)} / ${p.epochs}` : "–";
    $("p-phase").textContent = p ? p.phase : s.status === "queued" ? "waiting for a worker" : "–";
    $("p-step").textContent = p ? `${p.step} / ${p.steps}` : "–";
    $("p-samples").textContent = p ? String(p.samples) : "–";
    const times = SEGNAS.searchTimes(s);
    $("p-elapsed-label").textContent = s.finished_at ? "took" : "elapsed";
    $("p-elapsed").textContent = SEGNAS.formatDuration(times.elapsed);
    $("p-remaining").textContent =
      times.remaining === null ? "–" : `about ${SEGNAS.formatDuration(times.remaining)}`;
    const fraction = p ? p.fraction : s.status === "succeeded" ? 1 : 0;
    $("progress-bar").replaceChildren(SEGNAS.progressBar(fraction, { id: "progress" }));
  }

  // --- details: rewards, samples, result, best architecture --------------------------------

  async function refreshDetails(s) {
    const succeeded = s.status === "succeeded";
    const [rewards, samples, result, retrains, cells] = await Promise.all([
      SEGNAS.getJSON(rewardNext ? `${base}/rewards?after=${rewardNext}` : `${base}/rewards`),
      samplesLive() ? SEGNAS.getJSON(samplesUrl(null)) : null,
      succeeded ? SEGNAS.getJSON(`${base}/result`) : null,
      succeeded ? SEGNAS.getJSON(`${base}/retrains`) : null,
      SEGNAS.getJSON(`${base}/cells`),
    ]);
    renderCells(cells);
    renderRetrains(retrains ? retrains.items || [] : []);
    // The first answer is the curve (downsampled when long); later ones only the new steps.
    rewardPoints = rewardNext ? rewardPoints.concat(rewards.points || []) : rewards.points || [];
    rewardNext = rewards.next;
    CHARTS.drawRewardChart($("reward-chart"), rewardPoints);
    renderFilterChoices(cells.cells || [], s.spec);
    await refreshScatter(isTerminal(s.status));
    if (samples && samplesLive()) showSamplePage(samples, null); // unless the reader moved on
    renderResult(result);
    renderBest(result || s.best, s.spec, result);
  }

  let scatterAt = -Infinity;
  let scatterItems = [];
  let scatterFront = null;

  /** Reward against size of the latest samples: at most every SCATTER_EVERY_MS while the
   * search runs (a page of 500 rows), and once more when it has ended. */
  async function refreshScatter(final) {
    if (!final && Date.now() - scatterAt < SCATTER_EVERY_MS) return;
    scatterAt = Date.now();
    const [page, front] = await Promise.all([
      SEGNAS.getJSON(`${base}/architectures?order=desc&limit=${SCATTER_ROWS}`),
      SEGNAS.getJSON(`${base}/front?cost=params`),
    ]);
    scatterItems = page.items || [];
    scatterFront = front;
    const shown = scatterItems.length === SCATTER_ROWS
      ? `the latest ${SCATTER_ROWS} samples` : `all ${scatterItems.length} samples`;
    $("scatter-caption").textContent = `${shown}, and the Pareto front of all ` +
      `${front.samples.toLocaleString()}; parameters of each as a stand-alone network`;
    CHARTS.drawSizeScatter($("size-chart"), scatterItems, scatterFront);
  }

  // The heat map's data, and whether the reader has picked an epoch (else: the latest).
  let cellData = null;
  let epochPicked = false;

  function renderCells(data) {
    cellData = data;
    const epochs = data.epochs || [];
    $("cells-card").hidden = epochs.length === 0;
    if (!epochs.length) return;
    const slider = $("cells-epoch");
    slider.max = String(epochs.length - 1);
    if (!epochPicked) slider.value = slider.max;
    drawCells();
  }

  function drawCells() {
    const epochs = cellData.epochs;
    const chosen = epochs[Number($("cells-epoch").value)] || epochs[epochs.length - 1];
    $("cells-epoch-label").textContent = `${chosen.epoch + 1} of ${epochs.length}`;
    $("cells-caption").textContent =
      `the share of its ${chosen.samples} samples in that epoch choosing each cell, per layer`;
    CHARTS.drawCellHeatmap($("cells-heatmap"), cellData.cells, chosen.counts);
  }

  // --- the samples table: sorted, filtered and paged by the API ------------------------------

  // What the reader asked for. With none of it (newest first, unfiltered, first page) the
  // table follows the search live; otherwise it changes only when the reader changes it.
  const view = { sort: "id", order: "desc", phase: "", epoch: "", cell: "", layer: "", fold: false };
  let pageAfter = null; // the cursor the shown page started from (null: the first page)
  let nextAfter = null;
  let pageNumber = 1;

  function samplesLive() {
    return view.sort === "id" && !view.phase && !view.epoch && !view.cell && pageAfter === null;
  }

  function samplesUrl(after) {
    const q = new URLSearchParams({ limit: String(PAGE_ROWS), order: view.order, sort: view.sort });
    if (view.phase) q.set("phase", view.phase);
    if (view.epoch) q.set("epoch", String(Number(view.epoch) - 1)); // 1-based on the page
    if (view.cell !== "") q.set("cell", view.cell);
    if (view.cell !== "" && view.layer !== "") q.set("layer", view.layer);
    if (view.fold && view.phase === "derive") q.set("fold", "true");
    if (after) q.set("after", after);
    return `${base}/architectures?${q}`;
  }

  let samplesAsked = 0; // only the answer to the latest question is shown

  async function loadSamples(after) {
    const asked = ++samplesAsked;
    try {
      const page = await SEGNAS.getJSON(samplesUrl(after));
      if (asked === samplesAsked) showSamplePage(page, after);
    } catch (error) {
      if (asked === samplesAsked) {
        $("samples-page").textContent = `Cannot load the samples (${error.message}).`;
      }
    }
  }

  function showSamplePage(page, after) {
    pageAfter = after;
    nextAfter = page.next;
    renderSamples(page.items || []);
    $("samples-next").disabled = !nextAfter;
    $("samples-first").disabled = after === null;
    $("samples-page").textContent = `page ${pageNumber}`;
    const sorted = view.sort === "id" ? "newest first" :
      `by ${view.sort.replace("_", " ")}, ${view.order === "desc" ? "largest" : "smallest"} first`;
    $("samples-caption").textContent = `every scored architecture, ${sorted}`;
    for (const th of document.querySelectorAll("#samples-table th.sortable")) {
      const on = th.dataset.sort === view.sort;
      if (on) th.setAttribute("aria-sort", view.order === "desc" ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
  }

  function renderSamples(items) {
    const folded = view.fold && view.phase === "derive";
    $("count-head").hidden = !folded;
    if (!items.length) {
      $("samples").replaceChildren(el("tr", { class: "empty" },
        el("td", { colspan: 13 }, samplesLive() ? "No architecture scored yet." :
          "No sample matches.")));
      return;
    }
    $("samples").replaceChildren(...items.map((a) => {
      const row = el(
        "tr", {},
        el("td", {}, a.phase),
        // Epochs count from 1 on this page, as in Progress; the derive phase comes after them.
        el("td", { class: "num" }, a.phase === "derive" ? "–" : a.epoch + 1),
        el("td", { class: "num" }, a.step),
        el("td", {}, el("code", {}, archString(a.arch))),
      );
      if (folded) row.append(el("td", { class: "num", "data-count": "" }, a.count));
      row.append(el("td", { class: "num", "data-metric": "params" },
        Number.isFinite(a.params) ? a.params.toLocaleString() : "–"));
      row.append(Number.isFinite(a.flops) ?
        el("td", { class: "num", "data-metric": "flops", title: `${a.flops.toLocaleString()} FLOPs` },
          (a.flops / 1e6).toFixed(1)) :
        el("td", { class: "num", "data-metric": "flops" }, "–"));
      for (const key of ["reward", "accuracy", "mean_precision", "mean_recall", "miou",
        "miou_plus"]) {
        row.append(el("td", { class: "num", "data-metric": key }, formatNumber(a[key])));
      }
      return row;
    }));
  }

  /** The cell and layer filters' choices, once the space is known. */
  function renderFilterChoices(cells, spec) {
    const cellPick = $("f-cell");
    if (cellPick.options.length === 1 && cells.length) {
      cells.forEach((name, i) => cellPick.append(el("option", { value: String(i) }, name)));
    }
    const layers = spec && spec.space ? Number(spec.space.layers) || 0 : 0;
    const layerPick = $("f-layer");
    if (layerPick.options.length === 1 && layers) {
      for (let i = 0; i < layers; i += 1) {
        layerPick.append(el("option", { value: String(i) }, String(i + 1)));
      }
    }
  }

  function viewChanged() {
    view.phase = $("f-phase").value;
    view.epoch = $("f-epoch").value;
    view.cell = $("f-cell").value;
    view.layer = $("f-layer").value;
    $("f-fold").disabled = view.phase !== "derive";
    view.fold = $("f-fold").checked && view.phase === "derive";
    pageNumber = 1;
    loadSamples(null);
  }

  /** A sortable header: largest first, then smallest first, then back to newest first. */
  function sortBy(key) {
    if (view.sort !== key) Object.assign(view, { sort: key, order: "desc" });
    else if (view.order === "desc") view.order = "asc";
    else Object.assign(view, { sort: "id", order: "desc" });
    pageNumber = 1;
    loadSamples(null);
  }

  // The retrained networks' test mIoU against their parameters, with their own front: what
  // the size front of the samples (reward on a minibatch) looks like trained from scratch.
  const RETRAINED_SCATTER = {
    yLabel: "test mIoU",
    empty: "No retrained network has its test metrics yet.",
    legend: [["dot-sample", "retrained (enas, pareto)"], ["dot-derive", "random baselines"]],
    frontLabel: "Pareto front (retrained)",
    dotClass: (a) => (a.phase === "random" ? "dot-derive" : "dot-sample"),
  };

  function renderRetrainedFront(items) {
    const points = items
      .filter((r) => Number.isFinite(r.miou))
      .map((r) => ({ params: r.params, reward: r.miou, arch: r.arch, phase: r.source }));
    const front = CHARTS.paretoFront(points).map((a) => ({
      cost: a.params, reward: a.reward, arch: a.arch, phase: a.phase,
    }));
    CHARTS.drawSizeScatter($("retrain-chart"), points, { points: front }, RETRAINED_SCATTER);
  }

  function renderRetrains(items) {
    $("retrains").hidden = !items.length;
    if (items.length) renderRetrainedFront(items);
    $("retrain-rows").replaceChildren(...items.map((r) => el(
      "tr", { title: r.error || "" },
      el("td", {}, `${r.source} ${r.rank}`),
      el("td", {}, el("code", {}, archString(r.arch))),
      el("td", {}, r.status),
      el("td", { class: "num" }, r.epochs),
      el("td", { class: "num" }, Number.isFinite(r.params) ? r.params.toLocaleString() : "–"),
      el("td", { class: "num" }, formatNumber(r.shared_score)),
      el("td", { class: "num" }, formatNumber(r.accuracy)),
      el("td", { class: "num" }, formatNumber(r.miou)),
      el("td", { class: "num" }, formatNumber(r.miou_plus)),
    )));
  }

  function renderResult(result) {
    const box = $("result");
    box.hidden = !result;
    if (!result) return;
    const metrics = result.metrics || {};
    const facts = METRICS.map(([key, label]) => el(
      "div", { "data-metric": key }, el("dt", {}, label), el("dd", {}, formatNumber(metrics[key])),
    ));
    facts.push(
      el("div", {}, el("dt", {}, "reward"), el("dd", {}, formatNumber(result.reward))),
      el("div", {}, el("dt", {}, "params"),
        el("dd", {}, Number.isFinite(result.params) ? result.params.toLocaleString() : "–")),
      el("div", {}, el("dt", {}, "arch"), el("dd", {}, el("code", {}, archString(result.arch)))),
    );
    $("result-metrics").replaceChildren(...facts);
    const of = Number.isFinite(result.candidates) ? `the best of ${result.candidates}` : "the best";
    $("next-commands").textContent = [
      "# retrain its 3 best architectures from scratch, with 3 random ones beside them",
      `segnas retrain --search ${searchId} --top-k 3 --random 3`,
      "# the retrained best as TorchScript, state_dict and model card",
      `segnas export --search ${searchId} --out export-${SEGNAS.shortId(searchId)}`,
    ].join("\n");
    $("result-note").textContent =
      `Validation split: ${of} derived architectures on it, so an optimistic estimate; ` +
      "retrain it for a test score.";
  }

  /** The best architecture: while the search runs, its reward on one validation minibatch;
   * once it has succeeded, the result's, on the whole validation split. */
  function renderBest(best, spec, result) {
    if (!best || !Array.isArray(best.arch)) return;
    $("arch-string").textContent = archString(best.arch);
    $("best-reward").textContent = result
      ? `reward ${formatNumber(best.reward)} on the validation split`
      : `reward ${formatNumber(best.reward)} on one validation minibatch (best so far)`;
    CHARTS.drawArchDiagram($("arch-diagram"), best.arch, spec && spec.space);
  }

  // --- the driver's log, streamed ---------------------------------------------------------

  const LOG_KEEP = 200000; // characters the page keeps (the start goes first)
  let logNext = null; // the offset to read from next (null: start from the log's tail)
  let logFinal = false;
  let logText = "";

  async function refreshLog(terminal) {
    if (logFinal) return;
    const query = logNext === null ? "" : `?offset=${logNext}`;
    const chunk = await SEGNAS.getJSON(`${base}/log${query}`);
    const box = $("log");
    if (!chunk.exists) {
      box.textContent = "Nothing logged here yet (a search on a Ray cluster logs to its Ray job).";
    } else if (chunk.text) {
      const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      logText = (logText + chunk.text).slice(-LOG_KEEP);
      box.textContent = logText;
      if (atEnd) box.scrollTop = box.scrollHeight;
    }
    logNext = chunk.next;
    // Once the search has ended, read on until the log is read to its end.
    logFinal = terminal && chunk.next >= chunk.size;
  }

  // --- polling ----------------------------------------------------------------------------

  function showConnection(message) {
    const banner = $("connection");
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  /** The search, or null when it has not changed since the last poll (304). */
  async function fetchSearch() {
    const headers = etag ? { "If-None-Match": etag } : {};
    const response = await SEGNAS.api(base, { headers, cache: "no-store" });
    if (response.status === 304) return null;
    const body = await SEGNAS.readJSON(response);
    etag = response.headers.get("ETag");
    return body;
  }

  async function poll() {
    try {
      const fresh = await fetchSearch();
      if (fresh) {
        search = fresh;
        renderHeader(search);
        renderProgress(search);
        renderSpec(search);
        if (!detailsFinal) {
          const terminal = isTerminal(search.status);
          await refreshDetails(search);
          detailsFinal = terminal;
        }
      }
      if (search) await refreshLog(isTerminal(search.status));
      showConnection(null);
    } catch (error) {
      if (error instanceof SEGNAS.ApiError && error.status === 404) {
        showNotFound();
        return; // nothing more will come
      }
      etag = null; // redraw everything on the next answer, not only what changed after it
      showConnection(`Cannot update the page (${error.message}); retrying.`);
    }
    window.setTimeout(poll, POLL_MS);
  }

  function showNotFound() {
    $("search-name").textContent = "No such search";
    $("search-id").textContent = searchId;
    $("status").textContent = "not found";
    $("status").className = "badge badge-failed";
  }

  async function cancel() {
    const name = search && search.name ? ` "${search.name}"` : "";
    if (!window.confirm(`Cancel the search${name}? It stops at its next step.`)) return;
    const button = $("cancel");
    button.disabled = true;
    try {
      const response = await SEGNAS.api(`${base}/cancel`, { method: "POST" });
      search = await SEGNAS.readJSON(response);
      renderHeader(search);
    } catch (error) {
      if (error instanceof SEGNAS.ApiError && error.status === 409) {
        // It ended between the last poll and the click: not a failure; the next poll (made
        // now, the ETag dropped) shows how it ended and hides the button.
        button.hidden = true;
        showConnection(null);
        $("cancel-note").textContent = `Nothing to cancel: ${error.message}.`;
        etag = null;
      } else {
        showConnection(`Cancel failed: ${error.message}`);
      }
    } finally {
      button.disabled = false;
    }
  }

  $("cancel").addEventListener("click", cancel);
  $("sample-filters").addEventListener("change", viewChanged);
  $("sample-filters").addEventListener("submit", (event) => event.preventDefault());
  for (const th of document.querySelectorAll("#samples-table th.sortable")) {
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
  }
  $("samples-next").addEventListener("click", () => {
    if (!nextAfter) return;
    pageNumber += 1;
    loadSamples(nextAfter);
  });
  $("samples-first").addEventListener("click", () => {
    pageNumber = 1;
    loadSamples(null);
  });
  $("clone").addEventListener("click", cloneSearch);
  $("cells-epoch").addEventListener("input", () => {
    epochPicked = true;
    if (cellData) drawCells();
  });
  window.addEventListener("resize", () => {
    if (rewardPoints.length) CHARTS.drawRewardChart($("reward-chart"), rewardPoints);
    if (scatterItems.length) CHARTS.drawSizeScatter($("size-chart"), scatterItems, scatterFront);
  });
  poll();
})();
