// A small line chart drawn on a canvas: crisp on high-DPI screens, redrawn on resize. A point
// whose value is no finite number (NaN, an infinity, null, a string: a diverged loss) is left
// out of its curve, which breaks there, and marked with a cross at the top of the chart.
import { isFiniteNumber } from "./ui.js";

const PALETTE = {
  light: { text: "#3b4252", grid: "#e5e9f0", axis: "#9aa3b2" },
  dark: { text: "#d8dee9", grid: "#313846", axis: "#6b7385" },
};

function niceStep(span, ticks) {
  const raw = span / Math.max(1, ticks);
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  const nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

function format(value, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  return value.toFixed(Math.min(digits, 4));
}

export class LineChart {
  constructor(canvas, { xLabel = "", yMin = null, yMax = null } = {}) {
    this.canvas = canvas;
    this.xLabel = xLabel;
    this.yMin = yMin;
    this.yMax = yMax;
    this.series = [];
    this.xMax = 1;
    this.observer = new ResizeObserver(() => this.draw());
    this.observer.observe(canvas);
  }

  setSeries(series, xMax) {
    this.series = series;
    this.xMax = Math.max(1, xMax || 1);
    const count = (test) => series.reduce((total, s) => total + s.points.filter(([, y]) => test(y)).length, 0);
    this.canvas.dataset.points = String(count(isFiniteNumber));
    this.canvas.dataset.skipped = String(count((y) => !isFiniteNumber(y)));
    this.draw();
  }

  destroy() {
    this.observer.disconnect();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    const colors = dark ? PALETTE.dark : PALETTE.light;
    ctx.font = "12px system-ui, -apple-system, 'Segoe UI', sans-serif";

    const values = this.series.flatMap((s) => s.points.map((p) => p[1]).filter(isFiniteNumber));
    let low = this.yMin ?? (values.length ? Math.min(...values) : 0);
    let high = this.yMax ?? (values.length ? Math.max(...values) : 1);
    if (high - low < 1e-6) {
      high += 0.5;
      low = Math.max(this.yMin ?? -Infinity, low - 0.5);
    }
    const yStep = niceStep(high - low, 4);
    low = Math.floor(low / yStep) * yStep;
    high = Math.ceil(high / yStep) * yStep;

    const pad = { left: 48, right: 12, top: 26, bottom: 32 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const x = (v) => pad.left + (v / this.xMax) * plotW;
    const y = (v) => pad.top + (1 - (v - low) / (high - low)) * plotH;

    ctx.strokeStyle = colors.grid;
    ctx.fillStyle = colors.text;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = low; v <= high + yStep / 2; v += yStep) {
      ctx.beginPath();
      ctx.moveTo(pad.left, Math.round(y(v)) + 0.5);
      ctx.lineTo(width - pad.right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(format(v, yStep), pad.left - 6, y(v));
    }
    const xStep = Math.max(1, niceStep(this.xMax, 6));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let v = 0; v <= this.xMax + 1e-9; v += xStep) {
      ctx.fillText(String(Math.round(v)), x(v), height - pad.bottom + 6);
    }
    ctx.fillStyle = colors.axis;
    ctx.fillText(this.xLabel, pad.left + plotW / 2, height - 14);

    // Legend across the top.
    let legendX = pad.left;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    for (const s of this.series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2.5;
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      ctx.beginPath();
      ctx.moveTo(legendX, 11);
      ctx.lineTo(legendX + 18, 11);
      ctx.stroke();
      ctx.fillStyle = colors.text;
      ctx.fillText(s.name, legendX + 24, 11);
      legendX += 24 + ctx.measureText(s.name).width + 18;
    }
    // The crosses' key, bottom left (beside the x axis's label).
    if (this.series.some((s) => s.points.some(([, py]) => !isFiniteNumber(py)))) {
      ctx.fillStyle = colors.text;
      ctx.textBaseline = "top";
      ctx.fillText("× not a number", 4, height - 14);
    }

    // A lone point (a one-epoch job without mid-epoch reports) is no curve: say its value.
    let labelled = 0;
    const finite = (s) => s.points.filter(([, py]) => isFiniteNumber(py));
    for (const s of this.series) {
      if (finite(s).length !== 1) continue;
      const [px, py] = finite(s)[0];
      ctx.fillStyle = s.color;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      ctx.fillText(`${s.name} ${format(py, 0.0001)}`, x(px) - 8, y(py) + (labelled % 2 ? 14 : -14));
      labelled += 1;
    }
    canvas.dataset.labelled = String(labelled);

    for (const s of this.series) {
      if (!s.points.length) continue;
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 2.5;
      ctx.lineJoin = "round";
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      ctx.beginPath();
      let joined = false; // whether the point before was drawn: the curve breaks at a mark
      for (const [px, py] of s.points) {
        if (isFiniteNumber(py)) ctx[joined ? "lineTo" : "moveTo"](x(px), y(py));
        joined = isFiniteNumber(py);
      }
      ctx.stroke();
      ctx.setLineDash([]);
      const radius = s.points.length > 40 ? 1.5 : 3;
      for (const [px, py] of s.points) {
        ctx.beginPath();
        if (isFiniteNumber(py)) {
          ctx.arc(x(px), y(py), radius, 0, Math.PI * 2);
          ctx.fill();
        } else {
          const [cx, cy, r] = [x(px), pad.top + 5, 4];
          ctx.lineWidth = 2;
          ctx.moveTo(cx - r, cy - r);
          ctx.lineTo(cx + r, cy + r);
          ctx.moveTo(cx + r, cy - r);
          ctx.lineTo(cx - r, cy + r);
          ctx.stroke();
        }
      }
    }
  }
}
