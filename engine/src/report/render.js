/* MAIN report renderer: the one drawing of a scored data set's report.
 *
 * Plain browser JavaScript, no dependencies, no modules. Defines
 *   globalThis.MainReport = { render(container, data, options), keptShare(hist, value, keep) }
 * render() empties `container` and draws `data` (the ReportData JSON of
 * `main-score report --json`, engine/src/report/mod.rs) into it. It is a
 * pure function of (data, options): the static report.html and the browser
 * annotation tool call it on the same data.
 *
 * options (all optional):
 *   threshold: {field, value, keep?, share?}  a threshold to draw instead of the
 *                              filter's (the tool's current one); its share kept is
 *                              `share` when given (the caller's exact count), else
 *                              estimated from the histogram's bars, shown with "≈"
 *   onThreshold(field, value)  makes every histogram interactive: click or
 *                              drag to move the threshold; called on each move
 *   sections: [names]          which sections to draw (default all): "header",
 *                              "summary", "histograms", "quadrants", "length",
 *                              "examples", "duplicates", "conversations", "provenance"
 *
 * Stable classes and attributes (tests count them):
 *   div.main-report                    the root drawn into container
 *   .main-count[data-key][data-value]  records, pairs, conversations, turns, truncated
 *   .main-kept[data-kept][data-of][data-share]   the filter's kept records
 *   table.main-summary tr[data-field] td[data-col=p10|p50|p90|rho_length][data-value]
 *   table.main-stats tr[data-field] td[data-p][data-value]   percentiles per field
 *   svg.main-hist[data-field]          one per histogram
 *     rect.bar[data-bin][data-count]   one per non-empty bin (class "bar kept"
 *                                      for a bin wholly on the kept side)
 *     rect.outside[data-side=below|above][data-count]  values outside the range
 *     line.threshold[data-value]       the threshold, when this field has one
 *     text.kept-share[data-share]      share this field's threshold alone keeps (exact
 *                                      from the data; estimated from the bars, "≈",
 *                                      for options.threshold or a dragged line)
 *   svg.main-scatter[data-x][data-y]   one per scatter; svg.main-quadrants is the
 *                                      fwd_pmi / rev_pmi one, svg.main-length the
 *                                      score-against-response-length ones
 *     circle.dot[data-line]            one per sampled pair ("dot kept" / "dot dropped"
 *                                      when a filter is marked)
 *     text.quadrant[data-quadrant][data-count]   aligned, ignores_instruction,
 *                                      not_recoverable, both_weak (over all records)
 *     text.rho[data-field][data-value] Spearman's rho with response length
 *   div.main-example[data-percentile][data-line]  one per example pair
 *     span.tok[data-pmi]               one per token of the heat map (--tokens)
 *   p.main-dup-count[data-kind][data-text][data-groups][data-records]  one per kind and text
 *   table.main-dups[data-kind=exact|near][data-text=instruction|response|pair]
 *     tr.group[data-count][data-lines]
 *   table.main-turns tr.turn[data-line][data-turn][data-alignment]
 *   pre.main-provenance
 */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, children) {
    var svg = tag.indexOf("svg:") === 0;
    var e = svg ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (attrs[k] === undefined || attrs[k] === null) continue;
        if (k === "text") e.textContent = String(attrs[k]);
        else e.setAttribute(k, String(attrs[k]));
      }
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }

  function num(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    var d = digits === undefined ? 3 : digits;
    if (Math.abs(x) >= 1e4 || (Math.abs(x) > 0 && Math.abs(x) < 1e-3)) return x.toExponential(2);
    return x.toFixed(d);
  }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%"; }
  function attr(x) { return x === null || x === undefined ? "" : String(x); }

  /* Share of a histogram's records on the kept side of `value` ("above":
   * x >= value), counting a bin cut by the value in proportion. */
  function keptShare(h, value, keep) {
    var n = h.count - h.missing;
    if (n <= 0) return 0;
    var bins = h.counts.length, w = (h.hi - h.lo) / bins, above = h.above;
    if (value <= h.lo) above += h.counts.reduce(function (a, b) { return a + b; }, 0);
    else if (value <= h.hi) {
      for (var i = 0; i < bins; i++) {
        var a = h.lo + i * w, b = a + w;
        if (a >= value) above += h.counts[i];
        else if (b > value) above += h.counts[i] * (b - value) / w;
      }
    }
    if (value <= h.lo) above += h.below;
    var share = above / n;
    return keep === "below" ? 1 - share : share;
  }

  /* The thresholds to draw: options.threshold, else the filter's. */
  function thresholds(data, options) {
    if (options.threshold && options.threshold.field) {
      var t = options.threshold, keep = "above";
      (data.filter ? data.filter.thresholds : []).forEach(function (f) { if (f.field === t.field) keep = f.keep; });
      // A caller that counted the records itself passes `share`: shown exact.
      return [{ field: t.field, value: t.value, keep: t.keep || keep, share: t.share, estimated: typeof t.share !== "number" }];
    }
    return data.filter ? data.filter.thresholds : [];
  }

  function section(root, title, id) {
    var s = el("section", { class: "main-section", "data-section": id }, [el("h2", { text: title })]);
    root.appendChild(s);
    return s;
  }

  function header(root, data) {
    root.appendChild(el("h1", { text: "MAIN report: " + data.source }));
    var counts = [["records", data.records], ["pairs", data.pairs], ["conversations", data.conversations],
      ["turns", data.turns], ["truncated", data.truncated]];
    var p = el("p", { class: "main-sub" });
    counts.forEach(function (c, i) {
      if (i) p.appendChild(document.createTextNode(" · "));
      p.appendChild(el("span", { class: "main-count", "data-key": c[0], "data-value": c[1], text: c[1].toLocaleString("en-US") + " " + c[0] }));
    });
    root.appendChild(p);
    if (data.filter) {
      var f = data.filter;
      var rules = f.rules.map(function (r) {
        return r.kind === "min" ? r.field + " ≥ " + r.value : "keep top " + pct(r.fraction) + " by " + r.rank_by;
      }).join(" and ");
      root.appendChild(el("p", {}, [
        "Filter (" + (f.source === "provenance" ? "from the scored file's provenance" : "from the report's options") + "): " + rules + ". ",
        el("strong", { class: "main-kept", "data-kept": f.kept, "data-of": f.of, "data-share": f.share,
          text: "Kept " + f.kept.toLocaleString("en-US") + " of " + f.of.toLocaleString("en-US") + " (" + pct(f.share) + ")" + (f.exact ? "" : ", estimated on a sample") })
      ]));
    } else {
      root.appendChild(el("p", { class: "main-sub", text: "No filter marked (pass --min FIELD=X or --keep-top FRACTION)." }));
    }
    if (data.notes && data.notes.length) {
      var ul = el("ul", { class: "main-notes" });
      data.notes.forEach(function (n) { ul.appendChild(el("li", { text: n })); });
      root.appendChild(ul);
    }
  }

  function summary(root, data) {
    var s = section(root, "Summary (as main-score score prints it)", "summary");
    var t = el("table", { class: "main-summary" }, [el("tr", {}, ["", "p10", "p50", "p90", "rho_length"].map(function (h, i) {
      return el("th", { class: i ? "num" : null, text: h });
    }))]);
    data.summary.forEach(function (r) {
      t.appendChild(el("tr", { "data-field": r.field }, [el("td", { text: r.field })].concat(["p10", "p50", "p90", "rho_length"].map(function (c) {
        return el("td", { class: "num", "data-col": c, "data-value": attr(r[c]), text: c === "rho_length" && r[c] !== null ? (r[c] >= 0 ? "+" : "") + r[c].toFixed(3) : num(r[c], 4) });
      }))));
    });
    s.appendChild(t);
    data.summary.forEach(function (r) { if (r.warning) s.appendChild(el("p", { class: "main-warning", text: "Warning: " + r.warning })); });
    if (!data.exact) s.appendChild(el("p", { class: "main-sub", text: "Computed on a uniform sample of " + data.exact_cap.toLocaleString("en-US") + " records." }));
    // Percentiles of every field.
    var ps = data.stats.length ? data.stats[0].percentiles.map(function (p) { return p[0]; }) : [];
    var st = el("table", { class: "main-stats" }, [el("tr", {}, [el("th", { text: "field" }), el("th", { class: "num", text: "min" })]
      .concat(ps.map(function (p) { return el("th", { class: "num", text: "p" + p }); }))
      .concat([el("th", { class: "num", text: "max" }), el("th", { class: "num", text: "mean" }), el("th", { class: "num", text: "missing" })]))]);
    data.stats.forEach(function (f) {
      st.appendChild(el("tr", { "data-field": f.field }, [el("td", { text: f.field }), el("td", { class: "num", "data-col": "min", "data-value": attr(f.min), text: num(f.min) })]
        .concat(f.percentiles.map(function (p) { return el("td", { class: "num", "data-p": p[0], "data-value": attr(p[1]), text: num(p[1]) }); }))
        .concat([el("td", { class: "num", "data-col": "max", "data-value": attr(f.max), text: num(f.max) }),
          el("td", { class: "num", "data-col": "mean", "data-value": attr(f.mean), text: num(f.mean) }),
          el("td", { class: "num", "data-col": "missing", "data-value": f.missing, text: f.missing })])));
    });
    s.appendChild(st);
  }

  /* One histogram. */
  function histogram(h, ths, options) {
    var W = 320, H = 170, L = 36, R = 8, T = 18, B = 30, pw = W - L - R, ph = H - T - B;
    var bins = h.counts.length, bw = pw / bins;
    var max = Math.max(1, h.below, h.above, Math.max.apply(null, h.counts));
    var svg = el("svg:svg", { class: "main-hist", "data-field": h.field, width: W + 2 * 14, height: H, viewBox: "-14 0 " + (W + 28) + " " + H });
    svg.appendChild(el("svg:text", { class: "title", x: L, y: 12, text: h.field }));
    var y = function (c) { return T + ph - ph * c / max; };
    var th = ths.filter(function (t) { return t.field === h.field; })[0];
    for (var i = 0; i < bins; i++) {
      var c = h.counts[i];
      if (!c) continue;
      var a = h.lo + i * (h.hi - h.lo) / bins, b = h.lo + (i + 1) * (h.hi - h.lo) / bins;
      var kept = th && (th.keep === "below" ? b <= th.value : a >= th.value);
      svg.appendChild(el("svg:rect", { class: kept ? "bar kept" : "bar", "data-bin": i, "data-count": c,
        x: (L + i * bw).toFixed(2), y: y(c).toFixed(2), width: Math.max(1, bw - 1).toFixed(2), height: (T + ph - y(c)).toFixed(2) }, [el("svg:title", { text: num(a) + " to " + num(b) + ": " + c })]));
    }
    [["below", h.below, L - 12], ["above", h.above, L + pw + 2]].forEach(function (o) {
      if (!o[1]) return;
      svg.appendChild(el("svg:rect", { class: "outside", "data-side": o[0], "data-count": o[1], x: o[2], y: y(o[1]).toFixed(2), width: 10, height: (T + ph - y(o[1])).toFixed(2) },
        [el("svg:title", { text: o[1] + " " + o[0] + " the range" })]));
    });
    svg.appendChild(el("svg:line", { class: "axis", x1: L, x2: L + pw, y1: T + ph, y2: T + ph }));
    svg.appendChild(el("svg:text", { x: L, y: H - 14, text: num(h.lo) }));
    svg.appendChild(el("svg:text", { x: L + pw, y: H - 14, "text-anchor": "end", text: num(h.hi) }));
    svg.appendChild(el("svg:text", { x: L - 4, y: T + 8, "text-anchor": "end", text: max }));
    var label = el("svg:text", { class: "kept-share", x: L + pw, y: 12, "text-anchor": "end" });
    var line = el("svg:line", { class: "threshold", y1: T - 4, y2: T + ph });
    var xOf = function (v) { return L + pw * (Math.min(Math.max(v, h.lo), h.hi) - h.lo) / (h.hi - h.lo); };
    function place(t) {
      if (!t) return;
      line.setAttribute("x1", xOf(t.value).toFixed(2));
      line.setAttribute("x2", xOf(t.value).toFixed(2));
      line.setAttribute("data-value", t.value);
      var share = t.estimated || typeof t.share !== "number" ? keptShare(h, t.value, t.keep) : t.share;
      label.setAttribute("data-share", share);
      label.textContent = (t.estimated ? "≈" : "") + pct(share) + " pass (" + (t.keep === "below" ? "≤ " : "≥ ") + num(t.value) + ")";
    }
    if (th) { place(th); svg.appendChild(line); svg.appendChild(label); }
    if (options.onThreshold) {
      svg.setAttribute("class", "main-hist interactive");
      var drag = false;
      var move = function (ev) {
        var r = svg.getBoundingClientRect();
        var sx = (ev.clientX - r.left) * (W + 28) / r.width - 14;
        var v = h.lo + (h.hi - h.lo) * Math.min(Math.max((sx - L) / pw, 0), 1);
        var t = { field: h.field, value: v, keep: th ? th.keep : "above", estimated: true };
        if (!line.parentNode) { svg.appendChild(line); svg.appendChild(label); }
        place(t);
        options.onThreshold(h.field, v);
      };
      svg.addEventListener("pointerdown", function (ev) {
        drag = true;
        try { svg.setPointerCapture(ev.pointerId); } catch (e) { /* a synthetic event has no pointer to capture */ }
        move(ev);
      });
      svg.addEventListener("pointermove", function (ev) { if (drag) move(ev); });
      svg.addEventListener("pointerup", function () { drag = false; });
    }
    return el("div", { class: "main-chart" }, [svg]);
  }

  function histograms(root, data, options) {
    var s = section(root, "Distributions", "histograms");
    s.appendChild(el("p", { class: "main-sub", text: "One bar per bin, counting every record; grey bars at the ends count the values outside the range (the 0.5th to 99.5th percentile)." }));
    var g = el("div", { class: "main-grid" });
    var ths = thresholds(data, options);
    data.histograms.forEach(function (h) { g.appendChild(histogram(h, ths, options)); });
    s.appendChild(g);
  }

  /* The sample's rows as objects of its columns. */
  function dots(data) {
    var cols = data.sample.columns;
    return data.sample.rows.map(function (r) {
      var o = {};
      cols.forEach(function (c, i) { o[c] = r[i]; });
      return o;
    });
  }

  function extent(values, withZero) {
    var v = values.filter(function (x) { return x !== null && Number.isFinite(x); }).sort(function (a, b) { return a - b; });
    if (!v.length) return [-1, 1];
    var lo = v[Math.floor(0.005 * (v.length - 1))], hi = v[Math.ceil(0.995 * (v.length - 1))];
    if (withZero) { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    if (hi <= lo) { lo -= 0.5; hi += 0.5; }
    var pad = (hi - lo) * 0.04;
    return [lo - pad, hi + pad];
  }

  function keptOf(d, data, options) {
    if (options.threshold && options.threshold.field) {
      var v = d[options.threshold.field], t = thresholds(data, options)[0];
      if (v === null || v === undefined) return false;
      return t.keep === "below" ? v <= t.value : v >= t.value;
    }
    return d.kept;
  }

  function scatter(rows, xf, yf, opts, data, options) {
    var W = opts.w, H = opts.h, L = 44, R = 10, T = 20, B = 32, pw = W - L - R, ph = H - T - B;
    var xs = extent(rows.map(function (d) { return d[xf]; }), opts.zero), ys = extent(rows.map(function (d) { return d[yf]; }), opts.zero);
    var X = function (v) { return L + pw * (Math.min(Math.max(v, xs[0]), xs[1]) - xs[0]) / (xs[1] - xs[0]); };
    var Y = function (v) { return T + ph - ph * (Math.min(Math.max(v, ys[0]), ys[1]) - ys[0]) / (ys[1] - ys[0]); };
    var svg = el("svg:svg", { class: "main-scatter " + opts.cls, "data-x": xf, "data-y": yf, width: W, height: H, viewBox: "0 0 " + W + " " + H });
    svg.appendChild(el("svg:text", { class: "title", x: L, y: 13, text: opts.title }));
    svg.appendChild(el("svg:rect", { x: L, y: T, width: pw, height: ph, fill: "none", class: "axis" }));
    if (opts.zero) {
      svg.appendChild(el("svg:line", { class: "zero", x1: X(0), x2: X(0), y1: T, y2: T + ph }));
      svg.appendChild(el("svg:line", { class: "zero", x1: L, x2: L + pw, y1: Y(0), y2: Y(0) }));
    }
    rows.forEach(function (d) {
      var x = d[xf], y = d[yf];
      if (x === null || y === null || x === undefined || y === undefined) return;
      var k = keptOf(d, data, options);
      svg.appendChild(el("svg:circle", { class: k === true ? "dot kept" : k === false ? "dot dropped" : "dot", "data-line": d.line,
        cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: opts.r }));
    });
    svg.appendChild(el("svg:text", { x: L, y: H - 16, text: num(xs[0]) }));
    svg.appendChild(el("svg:text", { x: L + pw, y: H - 16, "text-anchor": "end", text: num(xs[1]) }));
    svg.appendChild(el("svg:text", { x: L + pw / 2, y: H - 3, "text-anchor": "middle", text: xf }));
    svg.appendChild(el("svg:text", { x: L - 4, y: T + ph, "text-anchor": "end", text: num(ys[0]) }));
    svg.appendChild(el("svg:text", { x: L - 4, y: T + 8, "text-anchor": "end", text: num(ys[1]) }));
    return { svg: svg, X: X, Y: Y, L: L, T: T, pw: pw, ph: ph };
  }

  function sampleNote(data) {
    return data.sample.size < data.sample.of
      ? "Each dot is a pair: a uniform sample of " + data.sample.size.toLocaleString("en-US") + " of " + data.sample.of.toLocaleString("en-US") + " records."
      : "Each dot is a pair: all " + data.sample.size.toLocaleString("en-US") + " records.";
  }

  function legend(data, options) {
    if (!data.filter && !(options.threshold && options.threshold.field)) return null;
    return el("p", { class: "legend" }, [el("span", { style: "background:#2f9e6e" }), "kept", el("span", { style: "background:#d0342c" }), "dropped"]);
  }

  function quadrants(root, data, options) {
    var s = section(root, "Both directions: fwd_pmi against rev_pmi", "quadrants");
    s.appendChild(el("p", { class: "main-sub", text: sampleNote(data) + " Quadrant counts are over all records." }));
    var sc = scatter(dots(data), "fwd_pmi", "rev_pmi", { w: 640, h: 460, cls: "main-quadrants", title: "fwd_pmi (x) against rev_pmi (y)", zero: true, r: 2.2 }, data, options);
    var q = data.quadrants, L = sc.L, T = sc.T, pw = sc.pw, ph = sc.ph;
    [["aligned", "aligned", L + pw - 6, T + 14, "end"],
      ["ignores_instruction", "response ignores the instruction", L + 6, T + 14, "start"],
      ["not_recoverable", "instruction not recoverable from the response", L + pw - 6, T + ph - 8, "end"],
      ["both_weak", "both weak", L + 6, T + ph - 8, "start"]].forEach(function (a) {
      var n = q[a[0]];
      sc.svg.appendChild(el("svg:text", { class: "quadrant", "data-quadrant": a[0], "data-count": n, x: a[2], y: a[3], "text-anchor": a[4],
        text: a[1] + ": " + n.toLocaleString("en-US") + " (" + pct(data.records ? n / data.records : 0) + ")" }));
    });
    s.appendChild(el("div", { class: "main-chart" }, [sc.svg]));
    var l = legend(data, options);
    if (l) s.appendChild(l);
    if (q.missing) s.appendChild(el("p", { class: "main-sub", text: q.missing + " records lack fwd_pmi or rev_pmi." }));
  }

  function lengths(root, data, options) {
    var s = section(root, "Scores against response length", "length");
    s.appendChild(el("p", { class: "main-sub", text: sampleNote(data) + " ρ: Spearman's rank correlation with response_tokens" + (data.exact ? " over all records." : " over a uniform sample of " + data.exact_cap.toLocaleString("en-US") + " records.") + " |ρ| > 0.5: the score mostly measures length." }));
    var g = el("div", { class: "main-grid" });
    var rows = dots(data);
    data.stats.forEach(function (f) {
      if (f.field === "response_tokens" || f.field === "instruction_tokens") return;
      var sc = scatter(rows, "response_tokens", f.field, { w: 300, h: 230, cls: "main-length", title: f.field, zero: false, r: 1.6 }, data, options);
      var warn = f.rho_length !== null && Math.abs(f.rho_length) > 0.5;
      sc.svg.appendChild(el("svg:text", { class: "rho" + (warn ? " main-warning" : ""), "data-field": f.field, "data-value": attr(f.rho_length),
        x: sc.L + sc.pw, y: 13, "text-anchor": "end", text: "ρ = " + (f.rho_length === null ? "–" : f.rho_length.toFixed(3)) + (warn ? " (length!)" : "") }));
      g.appendChild(el("div", { class: "main-chart" }, [sc.svg]));
    });
    s.appendChild(g);
    data.stats.forEach(function (f) { if (f.length_warning) s.appendChild(el("p", { class: "main-warning", text: "Warning: " + f.length_warning })); });
  }

  function heat(tokens) {
    var d = el("div", { class: "main-heat" });
    tokens.forEach(function (t) {
      var p = t[1], a = p === null ? 0 : Math.min(Math.abs(p) / 3, 1);
      var bg = p === null ? "transparent" : p >= 0 ? "rgba(47,110,199," + (0.08 + 0.6 * a).toFixed(3) + ")" : "rgba(208,52,44," + (0.08 + 0.6 * a).toFixed(3) + ")";
      d.appendChild(el("span", { class: "tok", "data-pmi": attr(p), title: "pmi " + num(p), style: "background:" + bg, text: t[0] }));
    });
    return d;
  }

  function examples(root, data) {
    var ex = data.examples;
    var s = section(root, "The pairs behind the numbers (by " + ex.field + ")", "examples");
    s.appendChild(el("p", { class: "main-sub", text: "For each percentile of " + ex.field + ", the sampled pair nearest it. Texts cut to a few hundred characters." }));
    ex.items.forEach(function (e) {
      var kept = e.kept === null ? "" : e.kept ? " · kept" : " · dropped";
      var d = el("div", { class: "main-example", "data-percentile": e.percentile, "data-line": e.line }, [
        el("strong", { text: "p" + e.percentile + " of " + ex.field + " = " + num(e.target) + ": line " + e.line + (e.turn ? ", turn " + e.turn + " of " + e.n_turns : "") + " (" + ex.field + " " + num(e.value) + kept + ")" }),
        el("div", { class: "main-sub", text: ["alignment", "fwd_pmi", "rev_pmi", "fwd_pmi_total", "semantic", "ifd", "response_tokens"].map(function (k) { return k + " " + num(e.scores[k]); }).join(" · ") }),
        el("div", { text: "Instruction (" + e.instruction_chars + " characters)" }), el("div", { class: "main-text", text: e.instruction }),
        el("div", { text: "Response (" + e.response_chars + " characters)" }), el("div", { class: "main-text", text: e.response })
      ]);
      if (e.tokens) {
        d.appendChild(el("div", { text: "Response tokens coloured by pmi (blue: the instruction makes the token likelier; red: less likely)" + (e.tokens_cut ? ", first " + e.tokens.length + " tokens" : "") }));
        d.appendChild(heat(e.tokens));
      }
      s.appendChild(d);
    });
  }

  function dupTable(kind, text, g) {
    var t = el("table", { class: "main-dups", "data-kind": kind, "data-text": text, "data-groups": g.groups, "data-records": g.records, "data-extra": g.extra },
      [el("tr", {}, [el("th", { class: "num", text: "count" }), el("th", { text: "lines" }), el("th", { text: "text" })])]);
    g.list.forEach(function (x) {
      t.appendChild(el("tr", { class: "group", "data-count": x.count, "data-lines": x.lines.join(" ") }, [
        el("td", { class: "num", text: x.count }), el("td", { text: x.lines.join(", ") + (x.count > x.lines.length ? ", …" : "") }), el("td", { text: x.text })]));
    });
    return t;
  }

  function duplicates(root, data) {
    var d = data.duplicates, s = section(root, "Duplicates", "duplicates");
    [["exact", "instruction", d.exact.instruction], ["exact", "response", d.exact.response], ["exact", "pair", d.exact.pair],
      ["near", "instruction", d.near.instruction], ["near", "response", d.near.response]].forEach(function (a) {
      var g = a[2];
      var what = a[0] === "exact" ? "Exact duplicate " + a[1] + "s" + (a[1] === "pair" ? " (instruction and response)" : "") + " (lower case, whitespace collapsed)"
        : "Near-duplicate " + a[1] + "s (MinHash Jaccard ≥ " + d.near.jaccard + " on word 3-shingles" + (d.near.sample < d.near.of ? ", in a uniform sample of " + d.near.sample.toLocaleString("en-US") + " of " + d.near.of.toLocaleString("en-US") + " records" : "") + ")";
      s.appendChild(el("p", { class: "main-dup-count", "data-kind": a[0], "data-text": a[1], "data-groups": g.groups, "data-records": g.records, text: what + ": " + g.groups + " groups, " + g.records + " records, " + g.extra + " removable." }));
      if (g.list.length) s.appendChild(dupTable(a[0], a[1], g));
    });
    if (!d.exact_complete) s.appendChild(el("p", { class: "main-sub", text: "Exact duplicates counted among the first distinct texts only (see notes)." }));
  }

  function conversations(root, data) {
    var c = data.conversations_detail;
    var s = section(root, "Conversations: the weakest turns", "conversations");
    if (!c.count) { s.appendChild(el("p", { class: "main-sub", text: "No conversations in this file." })); return; }
    s.appendChild(el("p", { class: "main-sub", text: c.count + " conversations, " + c.turns + " scored turns. A conversation's score is its weakest turn's." }));
    var t = el("table", { class: "main-turns" }, [el("tr", {}, ["line", "turn", "alignment", "fwd_pmi", "rev_pmi", "tokens", "every turn's alignment", "user", "assistant"].map(function (h) { return el("th", { text: h }); }))]);
    c.weakest.forEach(function (w) {
      t.appendChild(el("tr", { class: "turn", "data-line": w.line, "data-turn": w.turn, "data-alignment": w.alignment }, [
        el("td", { class: "num", text: w.line }), el("td", { class: "num", text: w.turn + " of " + w.n_turns }),
        el("td", { class: "num", text: num(w.alignment) }), el("td", { class: "num", text: num(w.fwd_pmi) }), el("td", { class: "num", text: num(w.rev_pmi) }),
        el("td", { class: "num", text: w.response_tokens }), el("td", { text: w.turn_alignments.map(function (a) { return num(a, 2); }).join(" · ") }),
        el("td", {}, [el("div", { class: "main-text", text: w.user })]), el("td", {}, [el("div", { class: "main-text", text: w.assistant })])]));
    });
    s.appendChild(t);
  }

  function provenance(root, data) {
    var s = section(root, "Provenance", "provenance");
    if (!data.provenance) { s.appendChild(el("p", { class: "main-sub", text: "No provenance file beside the scored file." })); return; }
    var p = data.provenance;
    var model = p.model ? p.model.path : "–";
    var input = p.input ? p.input.path + " (" + p.input.bytes + " bytes, BLAKE3 " + String(p.input.blake3).slice(0, 16) + "…)" : "stdin";
    s.appendChild(el("p", { text: "main-score " + (p.main_score || "?") + " · model " + model + " · input " + input }));
    s.appendChild(el("pre", { class: "main-provenance", text: JSON.stringify(p, null, 2) }));
  }

  var SECTIONS = { header: header, summary: summary, histograms: histograms, quadrants: quadrants, length: lengths,
    examples: examples, duplicates: duplicates, conversations: conversations, provenance: provenance };
  var ORDER = ["header", "summary", "histograms", "quadrants", "length", "examples", "duplicates", "conversations", "provenance"];

  function render(container, data, options) {
    options = options || {};
    while (container.firstChild) container.removeChild(container.firstChild);
    var root = el("div", { class: "main-report" });
    (options.sections || ORDER).forEach(function (name) { if (SECTIONS[name]) SECTIONS[name](root, data, options); });
    container.appendChild(root);
    return root;
  }

  globalThis.MainReport = { render: render, keptShare: keptShare };
})();
