/* ccany: the flow dashboard's charts and a flow's stream timeline, drawn as inline SVG.
 *
 * Dashboard: every <figure class="ccany-chart"> inside #ccany-dashboard names a stored query's JSON
 * (data-url, `?_shape=array`) and how to draw it (data-kind, data-x, data-label, data-series, data-y).
 * Flow page: #ccany-events carries the events `[[offset_ms, type, block, bytes], ...]` in data-events.
 * When every chart is done, the container and <body> get data-charts-drawn (charts drawn with data),
 * data-charts-empty, data-charts-failed and data-charts-done="true".
 * Text from the data only ever goes through textContent / setAttribute: never innerHTML.
 */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac"];
  var SERIES_COLOURS = {
    requests: "#4e79a7", errors: "#e15759", flows: "#e15759",
    p50_ms: "#a0cbe8", p90_ms: "#4e79a7", p99_ms: "#1f3f66",
    ttft_p50_ms: "#ffbe7d", ttft_p90_ms: "#f28e2b", ttft_p99_ms: "#a3520a"
  };
  var EVENT_COLOURS = {
    message_start: "#4e79a7", content_block_start: "#59a14f", content_block_delta: "#76b7b2",
    content_block_stop: "#8cd17d", message_delta: "#f28e2b", message_stop: "#b07aa1", ping: "#bab0ac",
    error: "#e15759"
  };
  var WIDTH = 640;
  var HOUR = 3600 * 1000;

  function el(tag, attrs, parent, text) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, String(attrs[key])); });
    if (text !== undefined) node.textContent = String(text);
    if (parent) parent.appendChild(node);
    return node;
  }

  function tip(node, text) { el("title", {}, node, text); return node; }

  function html(tag, className, parent, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    if (parent) parent.appendChild(node);
    return node;
  }

  function num(value) {
    if (value === null || value === undefined || value === "") return null;
    var n = Number(value);
    return isFinite(n) ? n : null;
  }

  function fmt(n) {
    if (n === null) return "–";
    var abs = Math.abs(n);
    if (abs >= 1e9) return (n / 1e9).toFixed(abs >= 1e10 ? 0 : 1) + "G";
    if (abs >= 1e6) return (n / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + "M";
    if (abs >= 1e4) return (n / 1e3).toFixed(abs >= 1e5 ? 0 : 1) + "k";
    if (Math.round(n) === n) return String(n);
    if (abs < 1) return String(Number(n.toPrecision(2)));  // dollars: a turn costs fractions of a cent
    return n.toFixed(abs >= 100 ? 0 : 1);
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    var step = Math.pow(10, Math.floor(Math.log10(value)));
    var factors = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < factors.length; i++) {
      if (factors[i] * step >= value) return factors[i] * step;
    }
    return 10 * step;
  }

  function shorten(text, max) {
    text = String(text);
    return text.length > max ? text.slice(0, Math.max(1, max - 1)) + "…" : text;
  }

  function parseHour(text) {
    // "YYYY-MM-DD HH:00", UTC
    var m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2})/.exec(String(text));
    return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4]) : null;
  }

  function hourLabel(t, withHour) {
    var d = new Date(t);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    var day = pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    return withHour ? day + " " + pad(d.getUTCHours()) + ":00" : day;
  }

  function frame(body, height, width) {
    var svg = el("svg", {
      viewBox: "0 0 " + (width || WIDTH) + " " + height, width: "100%", role: "img",
      preserveAspectRatio: "xMidYMid meet", "class": "ccany-svg"
    });
    body.appendChild(svg);
    return svg;
  }

  function yAxis(svg, box, max, unit) {
    var ticks = 4;
    for (var i = 0; i <= ticks; i++) {
      var value = max * i / ticks;
      var y = box.bottom - (box.bottom - box.top) * i / ticks;
      el("line", { x1: box.left, x2: box.right, y1: y, y2: y, "class": "ccany-grid" }, svg);
      el("text", { x: box.left - 6, y: y + 4, "text-anchor": "end", "class": "ccany-tick" }, svg,
        fmt(value) + (i === ticks && unit ? " " + unit : ""));
    }
  }

  function legend(body, keys, colourOf) {
    var box = html("div", "ccany-legend", body);
    keys.forEach(function (key, i) {
      var item = html("span", "ccany-legend-item", box);
      var swatch = html("span", "ccany-swatch", item);
      swatch.style.background = colourOf(key, i);
      html("span", "", item, key);
    });
  }

  function colourFor(key, i) { return SERIES_COLOURS[key] || PALETTE[i % PALETTE.length]; }

  function timeRange(rows, x) {
    var times = rows.map(function (row) { return parseHour(row[x]); }).filter(function (t) { return t !== null; });
    var t0 = Math.min.apply(null, times);
    var t1 = Math.max.apply(null, times) + HOUR;
    return { t0: t0, t1: t1, hours: Math.max(1, Math.round((t1 - t0) / HOUR)) };
  }

  function timeAxis(svg, box, range) {
    var steps = [1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720];
    var step = steps[steps.length - 1];
    for (var i = 0; i < steps.length; i++) {
      if (range.hours / steps[i] <= 6) { step = steps[i]; break; }
    }
    var slot = (box.right - box.left) / range.hours;
    for (var h = 0; h < range.hours; h += step) {
      var x = box.left + h * slot;
      el("line", { x1: x, x2: x, y1: box.bottom, y2: box.bottom + 4, "class": "ccany-axis" }, svg);
      el("text", { x: x, y: box.bottom + 16, "text-anchor": "start", "class": "ccany-tick" }, svg,
        hourLabel(range.t0 + h * HOUR, step < 24));
    }
    el("line", { x1: box.left, x2: box.right, y1: box.bottom, y2: box.bottom, "class": "ccany-axis" }, svg);
    return slot;
  }

  /* One bar per hour for each key, overlaid (errors are a subset of requests). */
  function drawTimeBars(body, rows, spec) {
    var svg = frame(body, 240);
    var box = { left: 56, right: WIDTH - 12, top: 12, bottom: 210 };
    var range = timeRange(rows, spec.x);
    var max = niceMax(Math.max.apply(null, rows.map(function (row) { return num(row[spec.y[0]]) || 0; })));
    yAxis(svg, box, max);
    var slot = timeAxis(svg, box, range);
    var marks = 0;
    spec.y.forEach(function (key, k) {
      var width = Math.max(1, slot * (k === 0 ? 0.85 : 0.55));
      rows.forEach(function (row) {
        var t = parseHour(row[spec.x]);
        var value = num(row[key]);
        if (t === null || !value) return;
        var height = (box.bottom - box.top) * value / max;
        var x = box.left + (t - range.t0) / HOUR * slot + (slot - width) / 2;
        tip(el("rect", {
          x: x, y: box.bottom - height, width: width, height: height, fill: colourFor(key, k),
          "class": "ccany-mark", "data-key": key
        }, svg), row[spec.x] + " UTC: " + value + " " + key);
        marks++;
      });
    });
    legend(body, spec.y, colourFor);
    return marks;
  }

  /* One line per series value (e.g. model), a point per hour of the range (0 when absent). */
  function drawTimeLines(body, rows, spec) {
    var svg = frame(body, 240);
    var box = { left: 56, right: WIDTH - 12, top: 12, bottom: 210 };
    var key = spec.y[0];
    var range = timeRange(rows, spec.x);
    var names = [];
    var values = {};
    rows.forEach(function (row) {
      var name = String(row[spec.series]);
      var t = parseHour(row[spec.x]);
      if (t === null) return;
      if (!(name in values)) { values[name] = {}; names.push(name); }
      values[name][t] = (values[name][t] || 0) + (num(row[key]) || 0);
    });
    var peak = 0;
    names.forEach(function (name) {
      Object.keys(values[name]).forEach(function (t) { peak = Math.max(peak, values[name][t]); });
    });
    var max = niceMax(peak);
    yAxis(svg, box, max);
    var slot = timeAxis(svg, box, range);
    var marks = 0;
    names.forEach(function (name, i) {
      var colour = PALETTE[i % PALETTE.length];
      var points = [];
      for (var h = 0; h < range.hours; h++) {
        var t = range.t0 + h * HOUR;
        var value = values[name][t] || 0;
        points.push([box.left + (h + 0.5) * slot, box.bottom - (box.bottom - box.top) * value / max, t, value]);
      }
      if (points.length > 1) {
        var d = points.map(function (p, j) { return (j ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1); });
        tip(el("path", { d: d.join(" "), fill: "none", stroke: colour, "stroke-width": 2, "class": "ccany-mark ccany-line" },
          svg), name);
        marks++;
      }
      points.forEach(function (p) {
        if (!p[3]) return;
        tip(el("circle", { cx: p[0], cy: p[1], r: 3, fill: colour, "class": "ccany-mark" }, svg),
          name + ", " + hourLabel(p[2], true) + " UTC: " + p[3] + " " + key);
        marks++;
      });
    });
    legend(body, names, function (name, i) { return PALETTE[i % PALETTE.length]; });
    return marks;
  }

  /* A group of bars per row (label), one bar per key. */
  function drawGroupBars(body, rows, spec) {
    var svg = frame(body, 250);
    var box = { left: 56, right: WIDTH - 12, top: 12, bottom: 210 };
    var peak = 0;
    rows.forEach(function (row) {
      spec.y.forEach(function (key) { peak = Math.max(peak, num(row[key]) || 0); });
    });
    var max = niceMax(peak);
    yAxis(svg, box, max, spec.unit);
    el("line", { x1: box.left, x2: box.right, y1: box.bottom, y2: box.bottom, "class": "ccany-axis" }, svg);
    var group = (box.right - box.left) / rows.length;
    var bar = Math.min(40, group * 0.8 / spec.y.length);
    var marks = 0;
    rows.forEach(function (row, i) {
      var start = box.left + i * group + (group - bar * spec.y.length) / 2;
      spec.y.forEach(function (key, k) {
        var value = num(row[key]);
        if (value === null) return;
        var height = (box.bottom - box.top) * value / max;
        tip(el("rect", {
          x: start + k * bar, y: box.bottom - height, width: Math.max(1, bar - 1), height: Math.max(0.5, height),
          fill: colourFor(key, k), "class": "ccany-mark", "data-key": key
        }, svg), row[spec.label] + ": " + key + " = " + value);
        marks++;
      });
      tip(el("text", { x: box.left + (i + 0.5) * group, y: box.bottom + 16, "text-anchor": "middle", "class": "ccany-tick" },
        svg, shorten(row[spec.label], Math.max(4, Math.floor(group / 6.5)))), String(row[spec.label]));
    });
    legend(body, spec.y, colourFor);
    return marks;
  }

  /* One horizontal bar per row. */
  function drawHBars(body, rows, spec) {
    var key = spec.y[0];
    var rowHeight = 24;
    var box = { left: 180, right: WIDTH - 60, top: 8, bottom: 8 + rowHeight * rows.length };
    var svg = frame(body, box.bottom + 12);
    var max = niceMax(Math.max.apply(null, rows.map(function (row) { return num(row[key]) || 0; })));
    var marks = 0;
    rows.forEach(function (row, i) {
      var value = num(row[key]) || 0;
      var y = box.top + i * rowHeight;
      var width = (box.right - box.left) * value / max;
      tip(el("text", { x: box.left - 8, y: y + 16, "text-anchor": "end", "class": "ccany-tick" }, svg,
        shorten(row[spec.label], 28)), String(row[spec.label]));
      tip(el("rect", {
        x: box.left, y: y + 4, width: Math.max(1, width), height: rowHeight - 8, fill: colourFor(key, 0),
        "class": "ccany-mark", "data-key": key
      }, svg), row[spec.label] + ": " + value + " " + key);
      el("text", { x: box.left + width + 6, y: y + 16, "class": "ccany-tick" }, svg, fmt(value));
      marks++;
    });
    return marks;
  }

  /* A flow's stream: one lane per event type, one dot per event at its offset. */
  function drawEvents(body, events, ttft) {
    var types = [];
    events.forEach(function (e) { if (types.indexOf(e[1]) < 0) types.push(e[1]); });
    var lane = 18;
    var width = 1200;  // the flow page gives it the whole width: keep its text at about 1:1
    var box = { left: 150, right: width - 40, top: 10, bottom: 10 + lane * types.length };
    var svg = frame(body, box.bottom + 26, width);
    var last = Math.max.apply(null, events.map(function (e) { return num(e[0]) || 0; }));
    if (ttft !== null) last = Math.max(last, ttft);
    var max = niceMax(last);
    var scale = function (ms) { return box.left + (box.right - box.left) * ms / max; };
    for (var i = 0; i <= 5; i++) {
      var x = box.left + (box.right - box.left) * i / 5;
      el("line", { x1: x, x2: x, y1: box.top, y2: box.bottom, "class": "ccany-grid" }, svg);
      el("text", { x: x, y: box.bottom + 16, "text-anchor": i === 5 ? "end" : "middle", "class": "ccany-tick" }, svg,
        fmt(max * i / 5) + (i === 5 ? " ms" : ""));
    }
    types.forEach(function (type, i) {
      var y = box.top + lane * i + lane / 2;
      el("line", { x1: box.left, x2: box.right, y1: y, y2: y, "class": "ccany-lane" }, svg);
      el("text", { x: box.left - 8, y: y + 4, "text-anchor": "end", "class": "ccany-tick" }, svg, shorten(type, 24));
    });
    var colourOf = function (type) { return EVENT_COLOURS[type] || PALETTE[types.indexOf(type) % PALETTE.length]; };
    if (ttft !== null) {
      tip(el("line", { x1: scale(ttft), x2: scale(ttft), y1: box.top - 4, y2: box.bottom, "class": "ccany-ttft" }, svg),
        "time to first token: " + ttft + " ms");
    }
    var marks = 0;
    events.forEach(function (e, n) {
      var offset = num(e[0]) || 0;
      var y = box.top + lane * types.indexOf(e[1]) + lane / 2;
      var text = "#" + n + " " + e[1] + " at " + offset + " ms" +
        (e[2] !== null && e[2] !== undefined ? ", block " + e[2] : "") +
        (e[3] !== null && e[3] !== undefined ? ", " + e[3] + " bytes" : "");
      tip(el("circle", { cx: scale(offset), cy: y, r: 4, fill: colourOf(e[1]), "class": "ccany-mark ccany-event" }, svg),
        text);
      marks++;
    });
    legend(body, types, colourOf);
    return marks;
  }

  var DRAW = { timebars: drawTimeBars, timelines: drawTimeLines, groupbars: drawGroupBars, hbars: drawHBars };

  function specOf(figure) {
    var d = figure.dataset;
    return {
      kind: d.kind, url: d.url, x: d.x, label: d.label, series: d.series, unit: d.unit || "ms",
      y: (d.y || "").split(",").filter(Boolean), empty: d.empty || "No flows yet"
    };
  }

  function showEmpty(body, figure, message) {
    body.textContent = "";
    html("p", "ccany-empty", body, message);
    figure.dataset.state = "empty";
  }

  function showFailure(body, figure, message) {
    body.textContent = "";
    html("p", "ccany-failed", body, message);
    figure.dataset.state = "failed";
  }

  function finish(container, figures) {
    var count = function (state) {
      return figures.filter(function (f) { return f.dataset.state === state; }).length;
    };
    [container, document.body].forEach(function (node) {
      node.dataset.chartsDrawn = String(count("drawn"));
      node.dataset.chartsEmpty = String(count("empty"));
      node.dataset.chartsFailed = String(count("failed"));
      node.dataset.chartsDone = "true";
    });
  }

  function dashboard(container) {
    var figures = Array.prototype.slice.call(container.querySelectorAll("figure.ccany-chart"));
    var cache = {};
    var load = function (url) {
      if (!cache[url]) {
        cache[url] = fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
          .then(function (response) {
            if (!response.ok) throw new Error("HTTP " + response.status);
            return response.json();
          });
      }
      return cache[url];
    };
    var jobs = figures.map(function (figure) {
      var spec = specOf(figure);
      var body = figure.querySelector(".ccany-chart-body");
      return load(spec.url).then(function (rows) {
        if (!Array.isArray(rows)) throw new Error("unexpected answer");
        if (!rows.length) return showEmpty(body, figure, spec.empty);
        body.textContent = "";
        var marks = DRAW[spec.kind](body, rows, spec);
        figure.dataset.marks = String(marks);
        figure.dataset.state = marks ? "drawn" : "empty";
        if (!marks) html("p", "ccany-empty", body, spec.empty);
      }).catch(function (error) {
        showFailure(body, figure, "Could not load the data: " + error.message);
      });
    });
    Promise.all(jobs).then(function () { finish(container, figures); });
  }

  function timeline(figure) {
    var body = figure.querySelector(".ccany-chart-body");
    var events = [];
    try { events = JSON.parse(figure.dataset.events || "[]"); } catch (error) { events = []; }
    events = events.filter(function (e) { return Array.isArray(e) && e.length >= 2 && num(e[0]) !== null; });
    if (!events.length) {
      showEmpty(body, figure, figure.dataset.empty || "No events");
    } else {
      body.textContent = "";
      figure.dataset.marks = String(drawEvents(body, events, num(figure.dataset.ttft)));
      figure.dataset.state = "drawn";
    }
    finish(figure, [figure]);
  }

  function start() {
    var container = document.getElementById("ccany-dashboard");
    if (container) dashboard(container);
    var events = document.getElementById("ccany-events");
    if (events) timeline(events);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
