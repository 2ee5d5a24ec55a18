// The search page's drawings, as inline SVG: the reward curve, reward against size, the
// architecture and the policy's cell heat map.
"use strict";

const CHARTS = (() => {
  const { el, svg, formatNumber } = SEGNAS;

  // ---------------------------------------------------------------------------------------
  // Reward curve
  // ---------------------------------------------------------------------------------------

  // The drawing takes the container's width, so its text keeps the page's font size.
  const CHART = { minWidth: 360, height: 300, left: 52, right: 18, top: 34, bottom: 42 };
  const SERIES = [
    { key: "mean_reward", label: "mean reward", cls: "line-mean" },
    { key: "best_so_far", label: "best so far", cls: "line-best" },
  ];

  /** Round ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten. */
  function niceTicks(lo, hi, count) {
    if (!(hi - lo > 1e-9)) {
      lo -= 0.05;
      hi += 0.05;
    }
    const raw = (hi - lo) / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    const first = Math.floor(lo / step) * step;
    const last = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let i = 0; first + i * step <= last + step / 2; i++) ticks.push(first + i * step);
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return { lo: first, hi: last, ticks, decimals };
  }

  /** The horizontal grid lines and the y ticks of a chart ``width`` wide (``CHART``'s margins). */
  function yGrid(y, py, width) {
    const { left, right } = CHART;
    return y.ticks.flatMap((v) => [
      svg("line", { x1: left, x2: width - right, y1: py(v), y2: py(v), class: "grid" }),
      svg("text", { x: left - 6, y: py(v), class: "tick tick-y" }, v.toFixed(y.decimals)),
    ]);
  }

  /** The two axes and their labels (``yLabel`` null: none up the side). */
  function axes(width, xLabel, yLabel) {
    const { height, left, right, top, bottom } = CHART;
    const middle = (top + height - bottom) / 2;
    const drawn = [
      svg("line", { x1: left, x2: left, y1: top, y2: height - bottom, class: "axis" }),
      svg("line", {
        x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "axis",
      }),
      svg("text", { x: (left + width - right) / 2, y: height - 6, class: "axis-label" }, xLabel),
    ];
    if (yLabel) {
      drawn.push(svg("text", {
        x: 14, y: middle, class: "axis-label", transform: `rotate(-90 14 ${middle})`,
      }, yLabel));
    }
    return drawn;
  }

  /** Draws the reward curve of `points` (GET /searches/{id}/rewards) into `container`. */
  function drawRewardChart(container, points) {
    if (!points.length) {
      container.replaceChildren(el("p", { class: "muted" }, "No controller steps yet."));
      return;
    }
    const { height, left, right, top, bottom } = CHART;
    const width = Math.max(CHART.minWidth, Math.floor(container.clientWidth) || 640);
    const values = points.flatMap((p) => SERIES.map((s) => p[s.key])).filter(Number.isFinite);
    const y = niceTicks(Math.min(...values), Math.max(...values), 5);
    // x is the step's position among all the search's steps (a downsampled curve's point
    // stands for the bucket of steps that ends there).
    const at = (i) => (Number.isFinite(points[i].index) ? points[i].index : i);
    const xMax = Math.max(1, at(points.length - 1));
    const xStep = Math.max(1, Math.ceil(niceTicks(0, xMax, 6).ticks[1] || 1));
    const px = (i) => left + (points.length === 1 ? 0.5 : at(i) / xMax) * (width - left - right);
    const py = (v) => top + (1 - (v - y.lo) / (y.hi - y.lo)) * (height - top - bottom);

    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "reward-svg", role: "img",
      "aria-label": `reward per controller step, ${points.length} steps`,
    });
    chart.append(...yGrid(y, py, width));
    for (let v = 0; v <= xMax; v += xStep) {
      const x = left + (points.length === 1 ? 0.5 : v / xMax) * (width - left - right);
      chart.append(svg("text", { x, y: height - bottom + 16, class: "tick tick-x" }, v));
    }
    chart.append(...epochMarks(points, px, top, height - bottom, width - right));
    chart.append(...axes(width, "controller step", "reward"));
    for (const series of SERIES) {
      const xy = points
        .map((p, i) => [i, p[series.key]])
        .filter(([, v]) => Number.isFinite(v))
        .map(([i, v]) => `${px(i).toFixed(1)},${py(v).toFixed(1)}`);
      chart.append(svg("polyline", { points: xy.join(" "), class: `line ${series.cls}` }));
    }
    chart.append(...pointMarks(points, px, py), legend(width - right));
    container.replaceChildren(chart);
  }

  /** A dashed line where each epoch after the first begins; labels where there is room. */
  function epochMarks(points, px, y1, y2, xEnd) {
    const marks = [];
    let lastLabel = -Infinity;
    points.forEach((p, i) => {
      if (i === 0 || p.epoch === points[i - 1].epoch) return;
      const x = (px(i - 1) + px(i)) / 2;
      marks.push(svg("line", { x1: x, x2: x, y1, y2, class: "epoch-mark" }));
      if (x - lastLabel > 64 && x + 56 < xEnd) {
        marks.push(svg("text", { x: x + 4, y: y1 + 10, class: "epoch-label" }, `epoch ${p.epoch + 1}`));
        lastLabel = x;
      }
    });
    return marks;
  }

  /** A dot per step on the mean line, with the step's numbers as its tooltip. */
  function pointMarks(points, px, py) {
    const r = points.length > 80 ? 1.5 : 3;
    return points
      .map((p, i) => [p, i])
      .filter(([p]) => Number.isFinite(p.mean_reward))
      .map(([p, i]) => svg(
        "circle",
        { cx: px(i), cy: py(p.mean_reward), r, class: "dot-mean" },
        svg("title", {},
          `epoch ${p.epoch + 1}, step ${p.step}: mean ${formatNumber(p.mean_reward)}, ` +
          `max ${formatNumber(p.max_reward)}, best so far ${formatNumber(p.best_so_far)} ` +
          `(${p.samples} samples)`),
      ));
  }

  function legend(rightEdge) {
    const group = svg("g", { class: "legend" });
    let x = rightEdge;
    for (const series of [...SERIES].reverse()) {
      const textWidth = series.label.length * 6.6;
      x -= textWidth;
      group.append(svg("text", { x, y: 14 }, series.label));
      x -= 26;
      group.append(svg("line", { x1: x, x2: x + 20, y1: 10, y2: 10, class: `line ${series.cls}` }));
      x -= 18;
    }
    return group;
  }

  // ---------------------------------------------------------------------------------------
  // Reward against size
  // ---------------------------------------------------------------------------------------

  /** A dot per sample (GET /searches/{id}/architectures items): its parameters across, its
   * reward up; the derive phase's candidates drawn apart from the policy's samples. */
  /**
   * Reward against parameters of `items` (a page of samples), and over them `front`: the
   * Pareto front of all the search's samples (GET /front, by parameters), as a staircase.
   */
  // How the samples' scatter names its dots; the retrained networks' chart names its own.
  const SAMPLE_SCATTER = {
    yLabel: "reward",
    empty: "No sized sample yet.",
    legend: [["dot-sample", "policy samples"], ["dot-derive", "derive candidates"]],
    frontLabel: "Pareto front (all samples)",
    dotClass: (a) => (a.phase === "derive" ? "dot-derive" : "dot-sample"),
  };

  function drawSizeScatter(container, items, front, options = SAMPLE_SCATTER) {
    const sized = items.filter((a) => Number.isFinite(a.params) && Number.isFinite(a.reward));
    const steps = (front && front.points) || [];
    if (!sized.length && !steps.length) {
      container.replaceChildren(el("p", { class: "muted" }, options.empty));
      return;
    }
    const { height, left, right, top, bottom } = CHART;
    const width = Math.max(CHART.minWidth, Math.floor(container.clientWidth) || 640);
    const kilo = [...sized.map((a) => a.params), ...steps.map((p) => p.cost)].map((v) => v / 1000);
    const rewards = [...sized.map((a) => a.reward), ...steps.map((p) => p.reward)];
    const x = niceTicks(Math.min(...kilo), Math.max(...kilo), 6);
    const y = niceTicks(Math.min(...rewards), Math.max(...rewards), 5);
    const px = (v) => left + ((v - x.lo) / (x.hi - x.lo)) * (width - left - right);
    const py = (v) => top + (1 - (v - y.lo) / (y.hi - y.lo)) * (height - top - bottom);
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "reward-svg", role: "img",
      "aria-label": `${options.yLabel} against parameters, ${sized.length} points`,
    });
    chart.append(...yGrid(y, py, width));
    for (const v of x.ticks) {
      chart.append(svg("text", { x: px(v), y: height - bottom + 16, class: "tick tick-x" },
        v.toFixed(x.decimals)));
    }
    chart.append(...axes(width, "parameters (thousands)", options.yLabel));
    const r = sized.length > 300 ? 2 : 3;
    for (const a of sized) {
      chart.append(svg("circle", {
        cx: px(a.params / 1000).toFixed(1), cy: py(a.reward).toFixed(1), r,
        class: options.dotClass(a),
      }, svg("title", {}, `${SEGNAS.archString(a.arch)}: ${options.yLabel} ` +
        `${formatNumber(a.reward)}, ` +
        `${a.params.toLocaleString()} parameters (${a.phase})`)));
    }
    if (steps.length) {
      // A staircase: the best reward found at each budget holds until a larger one beats it.
      let d = "";
      steps.forEach((p, i) => {
        const sx = px(p.cost / 1000).toFixed(1);
        const sy = py(p.reward).toFixed(1);
        d += i === 0 ? `M${sx},${sy}` : `H${sx}V${sy}`;
      });
      chart.append(svg("path", { d, class: "front-line" }));
      for (const p of steps) {
        chart.append(svg("circle", {
          cx: px(p.cost / 1000).toFixed(1), cy: py(p.reward).toFixed(1), r: 4, class: "dot-front",
        }, svg("title", {}, `on the front: ${SEGNAS.archString(p.arch)}, ${options.yLabel} ` +
          `${formatNumber(p.reward)}, ${p.cost.toLocaleString()} parameters (${p.phase})`)));
      }
    }
    chart.append(scatterLegend(width - right, steps.length > 0, options));
    container.replaceChildren(chart);
  }

  /** The points of `items` ({params, reward}) that nothing smaller (or as small) beats on
   * reward, smallest first: the staircase storage/fronts.py draws for the samples. */
  function paretoFront(items) {
    const order = items
      .map((a, i) => [a, i])
      .filter(([a]) => Number.isFinite(a.params) && Number.isFinite(a.reward))
      .sort(([a, i], [b, j]) => a.params - b.params || b.reward - a.reward || i - j);
    const front = [];
    let best = -Infinity;
    for (const [a] of order) {
      if (a.reward > best) {
        front.push(a);
        best = a.reward;
      }
    }
    return front;
  }

  function scatterLegend(xEnd, withFront, options) {
    const group = svg("g", { class: "legend" });
    const entries = [...options.legend];
    if (withFront) entries.push(["dot-front", options.frontLabel]);
    const first = xEnd - 150 * entries.length + 10;
    entries.forEach(([cls, label], i) => {
      const x = first + i * 150;
      group.append(svg("circle", { cx: x, cy: 14, r: 4, class: cls }),
        svg("text", { x: x + 10, y: 14 }, label));
    });
    return group;
  }

  // ---------------------------------------------------------------------------------------
  // Reward curves of several searches
  // ---------------------------------------------------------------------------------------

  /** The mean reward per controller step of each of `series` ({label, points, index}), one
   * line each in the colour of its index, over the step count (searches may differ in it). */
  function drawCompareChart(container, series) {
    if (!series.length) {
      container.replaceChildren(el("p", { class: "muted" }, "No controller steps yet."));
      return;
    }
    const { height, left, right, top, bottom } = CHART;
    const width = Math.max(CHART.minWidth, Math.floor(container.clientWidth) || 640);
    const values = series.flatMap((s) => s.points.map((p) => p.mean_reward))
      .filter(Number.isFinite);
    const y = niceTicks(Math.min(...values), Math.max(...values), 5);
    const xMax = Math.max(1, ...series.map((s) => s.points.length - 1));
    const x = niceTicks(0, xMax, 6);
    const px = (i) => left + (i / x.hi) * (width - left - right);
    const py = (v) => top + (1 - (v - y.lo) / (y.hi - y.lo)) * (height - top - bottom);
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "reward-svg", role: "img",
      "aria-label": `mean reward per controller step of ${series.length} searches`,
    });
    chart.append(...yGrid(y, py, width));
    for (const v of x.ticks) {
      chart.append(svg("text", { x: px(v), y: height - bottom + 16, class: "tick tick-x" }, v));
    }
    chart.append(...axes(width, "controller step", null));
    const legend = svg("g", { class: "legend" });
    series.forEach((s, n) => {
      const xy = s.points.map((p, i) => [i, p.mean_reward]).filter(([, v]) => Number.isFinite(v))
        .map(([i, v]) => `${px(i).toFixed(1)},${py(v).toFixed(1)}`);
      chart.append(svg("polyline", {
        points: xy.join(" "), class: `line series-${s.index}`, "data-series": s.label,
      }));
      const lx = left + 8 + n * 150;
      legend.append(
        svg("line", { x1: lx, x2: lx + 18, y1: 14, y2: 14, class: `line series-${s.index}` }),
        svg("text", { x: lx + 24, y: 14 }, s.label.length > 18 ? `${s.label.slice(0, 17)}…` : s.label),
      );
    });
    chart.append(legend);
    container.replaceChildren(chart);
  }

  // ---------------------------------------------------------------------------------------
  // Architecture diagram
  // ---------------------------------------------------------------------------------------

  const BOX = { width: 76, height: 46, gap: 16, level: 26, pad: 12 };
  const CELL_COLORS = {
    conv3x3: "#5b8def",
    conv5x5: "#2f5fc4",
    sep3x3: "#3fb98b",
    sep5x5: "#1e8a63",
    avgpool3x3: "#e0a526",
    maxpool3x3: "#e0682b",
    // the dilated and ASPP cells (supernet.space.CELL_REGISTRY): purples see wider
    dilconv3x3_r2: "#8b6fd6",
    dilconv3x3_r4: "#6a4fb8",
    dilsep3x3_r2: "#b49be8",
    aspp: "#c2569b",
  };
  const FALLBACK_COLORS = ["#5aa3b5", "#8a9a3a", "#a0725a", "#6b7280"];

  function cellColor(name, index) {
    return CELL_COLORS[name] || FALLBACK_COLORS[index % FALLBACK_COLORS.length];
  }

  /** Mirrors supernet.space.default_reductions: pooling after layers n//3-1 and 2n//3-1. */
  function defaultReductions(layers) {
    const r = new Set([Math.floor(layers / 3) - 1, Math.floor((2 * layers) / 3) - 1]);
    r.delete(-1);
    return [...r].sort((a, b) => a - b);
  }

  /**
   * Draws the encoder-decoder network of `arch` (one cell index per encoder layer) into
   * `container`, with a legend of the space's cells. `space` is the spec's `space` section.
   */
  function drawArchDiagram(container, arch, space) {
    const cells = (space && space.cells) || [];
    const layers = arch.length;
    const reductions = (space && space.reductions) || defaultReductions(layers);
    const levelOf = (i) => reductions.filter((r) => r < i).length;
    const depth = levelOf(layers);
    const arcSpace = 22 + 14 * reductions.length;

    const nodes = [{ kind: "io", label: "input", sub: "stem", level: 0 }];
    arch.forEach((c, i) => nodes.push(
      { kind: "encoder", layer: i, cell: c, label: `enc ${i}`, level: levelOf(i) }));
    [...arch].reverse().forEach((c, k) => {
      const i = layers - 1 - k;
      nodes.push({ kind: "decoder", layer: i, cell: c, label: `dec ${i}`, level: levelOf(i) });
    });
    nodes.push({ kind: "io", label: "output", sub: "head", level: 0 });

    const width = 2 * BOX.pad + nodes.length * BOX.width + (nodes.length - 1) * BOX.gap;
    const height = 2 * BOX.pad + arcSpace + depth * BOX.level + BOX.height;
    nodes.forEach((n, k) => {
      n.x = BOX.pad + k * (BOX.width + BOX.gap);
      n.y = BOX.pad + arcSpace + n.level * BOX.level;
    });

    const diagram = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height, class: "arch-svg", role: "img",
      "aria-label": `encoder-decoder network of architecture ${arch.join(" ")}`,
    }, svg("defs", {}, svg("marker", {
      id: "arrow", viewBox: "0 0 6 6", refX: 6, refY: 3, markerWidth: 6, markerHeight: 6,
      orient: "auto-start-reverse",
    }, svg("path", { d: "M0,0 L6,3 L0,6 z", class: "arrow-head" }))));

    for (let k = 1; k < nodes.length; k++) diagram.append(connector(nodes[k - 1], nodes[k]));
    for (const r of reductions) {
      const enc = nodes[1 + r];
      const dec = nodes[1 + layers + (layers - 1 - r)];
      diagram.append(skipArc(enc, dec, r));
    }
    nodes.forEach((n) => diagram.append(box(n, cells)));

    container.replaceChildren(
      el("div", { class: "diagram-scroll" }, diagram),
      cellLegend(cells, reductions.length > 0),
    );
  }

  function connector(a, b) {
    const x1 = a.x + BOX.width;
    const y1 = a.y + BOX.height / 2;
    const x2 = b.x;
    const y2 = b.y + BOX.height / 2;
    const line = svg("line", { x1, y1, x2, y2, class: "flow", "marker-end": "url(#arrow)" });
    if (a.level === b.level) return line;
    const what = b.level > a.level ? "pool ×½" : "up ×2";
    return svg("g", {}, line, svg("title", {}, what),
      svg("text", { x: (x1 + x2) / 2, y: Math.max(y1, y2) + 14, class: "flow-label" },
        b.level > a.level ? "↓" : "↑"));
  }

  function skipArc(enc, dec, layer) {
    const x1 = enc.x + BOX.width / 2;
    const x2 = dec.x + BOX.width / 2;
    const y = enc.y;
    const lift = 24 + 6 * (1 + enc.level);
    return svg("path", {
      d: `M${x1},${y} C${x1},${y - lift} ${x2},${y - lift} ${x2},${y}`,
      class: "skip", "marker-end": "url(#arrow)",
    }, svg("title", {}, `long skip: encoder layer ${layer} to decoder layer ${layer}`));
  }

  function box(node, cells) {
    const group = svg("g", {
      class: `node node-${node.kind}`,
      "data-layer": node.layer ?? null,
      "data-cell": node.cell ?? null,
    });
    const name = node.kind === "io" ? node.sub : cells[node.cell] ?? `cell ${node.cell}`;
    const color = node.kind === "io" ? "#9ca3af" : cellColor(name, node.cell);
    const title = node.kind === "io"
      ? node.label
      : `${node.kind} layer ${node.layer}: ${name} (cell ${node.cell})`;
    group.append(
      svg("title", {}, title),
      svg("rect", {
        x: node.x, y: node.y, width: BOX.width, height: BOX.height, rx: 6,
        class: `box ${node.kind}`, fill: color, stroke: color,
      }),
      svg("text", { x: node.x + BOX.width / 2, y: node.y + 17, class: "box-label" }, node.label),
      svg("text", { x: node.x + BOX.width / 2, y: node.y + 34, class: "box-cell" }, name),
    );
    return group;
  }

  function cellLegend(cells, hasSkips) {
    const items = cells.map((name, i) => el(
      "li", {},
      el("span", { class: "swatch", style: `background: ${cellColor(name, i)}` }),
      el("code", {}, i), " ", name,
    ));
    if (hasSkips) {
      items.push(el("li", {}, el("span", { class: "swatch swatch-skip" }), "long skip"));
    }
    return el("ul", { class: "cell-legend" }, items);
  }

  /** What the policy chose in one epoch: a layer per row, a cell per column, each square as
   * dark as the share of that epoch's samples that chose it there (the share written in it
   * from 10 %). ``counts[layer][cell]``. */
  function drawCellHeatmap(container, cells, counts) {
    const cell = 46, rowHead = 64, colHead = 58, pad = 4;
    const width = rowHead + cells.length * cell + pad;
    const height = colHead + counts.length * cell + pad;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height, class: "heatmap", role: "img",
      "aria-label": "the share of samples choosing each cell at each layer",
    });
    cells.forEach((name, c) => {
      const x = rowHead + c * cell + cell / 2;
      chart.append(svg("text", {
        x, y: colHead - 8, class: "heat-col", transform: `rotate(-35 ${x} ${colHead - 8})`,
      }, name));
    });
    counts.forEach((row, layer) => {
      const total = row.reduce((a, b) => a + b, 0) || 1;
      const y = colHead + layer * cell;
      chart.append(svg("text", { x: rowHead - 8, y: y + cell / 2 + 4, class: "heat-row" },
        `layer ${layer + 1}`));
      row.forEach((n, c) => {
        const share = n / total;
        const x = rowHead + c * cell;
        chart.append(svg("rect", {
          x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, rx: 3, class: "heat-cell",
          "fill-opacity": (0.06 + 0.94 * share).toFixed(3), "data-share": share.toFixed(4),
        }, svg("title", {}, `layer ${layer + 1}, ${cells[c]}: ${n} of ${total}`)));
        if (share >= 0.1) {
          chart.append(svg("text", {
            x: x + cell / 2, y: y + cell / 2 + 4, class: share > 0.55 ? "heat-label dark" : "heat-label",
          }, `${Math.round(share * 100)}%`));
        }
      });
    });
    container.replaceChildren(chart);
  }

  return {
    drawArchDiagram, drawCellHeatmap, drawCompareChart, drawRewardChart, drawSizeScatter,
    paretoFront,
  };
})();
