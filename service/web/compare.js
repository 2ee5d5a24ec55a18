// Searches side by side (/compare?ids=A,B,...): results, reward curves overlaid, spec diff.
"use strict";

(() => {
  const { el, formatNumber, archString, shortId } = SEGNAS;
  const MAX = 6;
  const $ = (id) => document.getElementById(id);

  const ids = [...new Set((new URLSearchParams(location.search).get("ids") || "")
    .split(",").map((s) => s.trim()).filter(Boolean))].slice(0, MAX);

  /** A spec as dotted keys and their values ("space.layers": 6). */
  function flatten(value, prefix = "", out = {}) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      for (const [key, inner] of Object.entries(value)) {
        flatten(inner, prefix ? `${prefix}.${key}` : key, out);
      }
    } else {
      out[prefix] = JSON.stringify(value);
    }
    return out;
  }

  /** The dotted keys whose values are not the same in every spec, in order. */
  function differences(specs) {
    const flat = specs.map((s) => flatten(s));
    const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
    return keys.filter((k) => new Set(flat.map((f) => f[k] ?? "(unset)")).size > 1)
      .map((k) => [k, flat.map((f) => f[k] ?? "(unset)")]);
  }

  async function load(id) {
    const base = `/searches/${encodeURIComponent(id)}`;
    try {
      const search = await SEGNAS.getJSON(base);
      const [rewards, result] = await Promise.all([
        SEGNAS.getJSON(`${base}/rewards`),
        search.status === "succeeded" ? SEGNAS.getJSON(`${base}/result`) : null,
      ]);
      return { id, search, points: rewards.points || [], result };
    } catch (error) {
      return { id, error: error.message };
    }
  }

  function render(runs) {
    const found = runs.filter((r) => !r.error);
    $("compare-caption").textContent = ids.length
      ? `${found.length} of ${ids.length} searches` : "";
    $("compare-rows").replaceChildren(...runs.map((r, i) => {
      const swatch = el("td", {}, el("span", { class: `swatch series-${i}` }));
      if (r.error) {
        return el("tr", {}, swatch, el("td", { class: "mono" }, shortId(r.id)),
          el("td", { colspan: 7, class: "muted" }, r.error));
      }
      const s = r.search;
      const best = r.result || s.best;
      const metrics = (r.result && r.result.metrics) || {};
      return el("tr", { "data-id": s.id }, swatch,
        el("td", {}, el("a", { href: `/searches/${s.id}` }, s.name || shortId(s.id))),
        el("td", {}, SEGNAS.statusBadge(s.status)),
        el("td", {}, s.spec.reward || "–"),
        el("td", { class: "num" }, best ? formatNumber(best.reward) : "–"),
        el("td", { class: "num" }, formatNumber(metrics.miou)),
        el("td", { class: "num" }, formatNumber(metrics.accuracy)),
        el("td", { class: "num" },
          r.result && Number.isFinite(r.result.params) ? r.result.params.toLocaleString() : "–"),
        el("td", {}, best && best.arch ? el("code", {}, archString(best.arch)) : "–"));
    }));
    CHARTS.drawCompareChart($("compare-chart"), runs.map((r, i) => ({
      label: r.error ? shortId(r.id) : (r.search.name || shortId(r.id)),
      points: r.points || [],
      index: i,
    })).filter((s) => s.points.length));
    const diff = differences(found.map((r) => r.search.spec));
    $("diff-head").replaceChildren(el("th", {}, "field"), ...found.map((r, i) =>
      el("th", {}, el("span", { class: `swatch series-${runs.indexOf(r)}` }),
        ` ${r.search.name || shortId(r.id)}`)));
    $("diff-rows").replaceChildren(...(diff.length ? diff.map(([key, values]) =>
      el("tr", {}, el("td", { class: "mono" }, key),
        ...values.map((v) => el("td", { class: "mono" }, v)))) :
      [el("tr", { class: "empty" }, el("td", { colspan: found.length + 1 },
        found.length > 1 ? "The specs are the same." : "Pick two searches or more."))]));
  }

  async function main() {
    if (!ids.length) {
      $("compare-caption").textContent =
        "No searches named: pick some in the list, or open /compare?ids=A,B.";
      $("compare-chart").replaceChildren(el("p", { class: "muted" }, "Nothing to draw."));
      return;
    }
    render(await Promise.all(ids.map(load)));
  }

  main();
})();
