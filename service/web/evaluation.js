// One evaluation (segnas evaluate / segnas reproduce --seeds): progress, Table 1 with the
// controls, Kendall's tau, the goal and the paper's observations; polled while it runs.
"use strict";

(() => {
  const { el, formatNumber, getJSON, shortId, statusBadge, timeElement } = SEGNAS;
  const POLL_MS = 5000;
  const METRICS = [
    ["accuracy", "accuracy"],
    ["mean_precision", "mean precision"],
    ["mean_recall", "mean recall"],
    ["miou", "mean IoU"],
    ["miou_plus", "mIoU+"],
  ];
  const METHODS = ["enas_accuracy", "enas_miou", "enas_miou_plus", "random_ws", "largest",
    "param_matched"];

  const id = decodeURIComponent(window.location.pathname.split("/").filter(Boolean).pop() || "");
  const byId = (name) => document.getElementById(name);

  function meanSd(entry, metric) {
    const mean = entry[`test_${metric}_mean`];
    const sd = entry[`test_${metric}_sd`];
    if (typeof mean !== "number") return "–";
    return typeof sd === "number" ? `${formatNumber(mean)} ± ${formatNumber(sd)}` : formatNumber(mean);
  }

  function renderTable(summary) {
    const table = byId("table-one");
    const names = METHODS.filter((m) => summary.methods[m]);
    const head = el("thead", {}, el("tr", {}, el("th", {}, "test split"),
      names.map((n) => el("th", { class: "num" }, n))));
    const body = el("tbody", {},
      METRICS.map(([key, label]) => el("tr", {}, el("th", {}, label),
        names.map((n) => el("td", { class: "num" }, meanSd(summary.methods[n], key))))),
      el("tr", {}, el("th", {}, "parameters"),
        names.map((n) => el("td", { class: "num" }, String(summary.methods[n].params ?? "–")))));
    table.replaceChildren(head, body);

    const tau = summary.kendall_tau;
    const goal = summary.goal;
    const items = [
      `Kendall tau, shared score against retrained ${summary.metric}: ENAS supernet ` +
        `${formatNumber(tau.enas)}, uniform supernet ${formatNumber(tau.uniform)}`,
    ];
    if (goal.best_enas) {
      const margins = Object.entries(goal.margins || {})
        .map(([k, v]) => `${k} ${v >= 0 ? "+" : ""}${formatNumber(v, 4)}`).join(", ");
      items.push(`goal: ${goal.best_enas} beats the controls by more than ` +
        `${formatNumber(goal.larger_sd, 4)} (${margins}): ${goal.beats_controls ? "met" : "not met"}; ` +
        `tau >= ${goal.tau_goal}: ${goal.tau_met ? "met" : "not met"}`);
    }
    const paper = summary.paper;
    if (paper && paper.accuracy_order) {
      const order = paper.accuracy_order;
      items.push(`the paper's accuracy order (${order.paper.join(" > ")}): ` +
        `${order.holds ? "holds" : "does not hold"}; measured ${order.measured.join(" > ")}` +
        `${order.within_noise ? " (within seed noise)" : ""}`);
    }
    if (paper && paper.large_kernels) {
      const share = paper.large_kernels.share.enas_accuracy;
      items.push(`5x5 cells under the accuracy reward: ` +
        `${typeof share === "number" ? Math.round(share * 100) + " %" : "–"} of its layers ` +
        `(a uniform draw: ${Math.round((paper.large_kernels.uniform_share || 0) * 100)} %)`);
    }
    byId("findings").replaceChildren(...items.map((t) => el("li", {}, t)));
  }

  function render(evaluation) {
    document.title = `segnas evaluation ${shortId(evaluation.id)}`;
    byId("evaluation-name").textContent = evaluation.name || "Evaluation";
    byId("evaluation-id").textContent = evaluation.id;
    byId("status").replaceWith(statusBadge(evaluation.status, { id: "status" }));
    const p = evaluation.progress;
    byId("searches-progress").textContent = `${p.searches_finished} / ${p.searches_planned}`;
    byId("trainings-stored").textContent = String(p.trainings_stored);
    byId("seeds").textContent = String(evaluation.settings.seeds ?? "–");
    byId("created-at").replaceChildren(timeElement(evaluation.created_at));
    const error = byId("error");
    error.hidden = !evaluation.error;
    error.textContent = evaluation.error || "";
    if (evaluation.summary) renderTable(evaluation.summary);
    const rows = evaluation.searches.map((s) => el("tr", {},
      el("td", { class: "num" }, String(s.seed)),
      el("td", {}, s.method),
      el("td", { class: "mono" }, el("a", { href: s.page, title: s.search_id }, shortId(s.search_id))),
      el("td", {}, s.status ? statusBadge(s.status) : "gone")));
    byId("searches").replaceChildren(...(rows.length ? rows
      : [el("tr", { class: "empty" }, el("td", { colspan: 4 }, "No search yet."))]));
  }

  async function poll() {
    const banner = byId("connection");
    try {
      // The page's own URL: the browser's cache holds the page under it, so no cache.
      const evaluation = await getJSON(`/evaluations/${encodeURIComponent(id)}`, { cache: "no-store" });
      banner.hidden = true;
      render(evaluation);
      if (evaluation.status === "running") setTimeout(poll, POLL_MS);
    } catch (error) {
      if (error.status === 404) {
        byId("evaluation-name").textContent = "No such evaluation";
        byId("status").textContent = "not found";
        return;
      }
      banner.hidden = false;
      banner.textContent = `Cannot reach the server (${error.message}); retrying.`;
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
