/** One line of a chart: name, points (x, y), colour. */
export interface Series {
  name: string;
  points: [number, number][];
  color: string;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/**
 * A small, dependency-free SVG line chart with axes, ticks and a legend (for run reports).
 */
export function lineChart(
  title: string,
  xLabel: string,
  yLabel: string,
  series: Series[],
  width = 640,
  height = 360,
): string {
  const pad = { l: 60, r: 20, t: 36, b: 46 };
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).filter(Number.isFinite);
  const x0 = Math.min(...xs, 0);
  const x1 = Math.max(...xs, 1);
  let y0 = Math.min(...ys, 0);
  let y1 = Math.max(...ys, 1e-9);
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 1, y1 + 1];
  // round the top of the axis up to 1, 2, 2.5 or 5 times a power of ten so the ticks read well
  const mag = 10 ** Math.floor(Math.log10(y1 - y0));
  y1 = y0 + mag * ([1, 2, 2.5, 5, 10].find((f) => f * mag >= y1 - y0 - 1e-12) ?? 10);
  const W = width - pad.l - pad.r;
  const H = height - pad.t - pad.b;
  const sx = (x: number) => pad.l + ((x - x0) / (x1 - x0 || 1)) * W;
  const sy = (y: number) => pad.t + H - ((y - y0) / (y1 - y0)) * H;
  const ticks = (a: number, b: number, n = 5) =>
    Array.from({ length: n + 1 }, (_, i) => a + ((b - a) * i) / n);
  const fmt = (v: number) =>
    Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toFixed(2);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  );
  for (const t of ticks(y0, y1)) {
    out.push(
      `<line x1="${pad.l}" x2="${pad.l + W}" y1="${sy(t)}" y2="${sy(t)}" stroke="#e5e5e5"/>`,
    );
    out.push(`<text x="${pad.l - 6}" y="${sy(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  for (const t of ticks(x0, x1))
    out.push(`<text x="${sx(t)}" y="${pad.t + H + 16}" text-anchor="middle">${fmt(t)}</text>`);
  out.push(`<line x1="${pad.l}" x2="${pad.l}" y1="${pad.t}" y2="${pad.t + H}" stroke="black"/>`);
  out.push(
    `<line x1="${pad.l}" x2="${pad.l + W}" y1="${pad.t + H}" y2="${pad.t + H}" stroke="black"/>`,
  );
  out.push(
    `<text x="${pad.l + W / 2}" y="${height - 8}" text-anchor="middle">${esc(xLabel)}</text>`,
  );
  out.push(
    `<text x="14" y="${pad.t + H / 2}" text-anchor="middle" transform="rotate(-90 14 ${pad.t + H / 2})">${esc(yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length)
      out.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ')}"/>`,
      );
    out.push(
      `<rect x="${pad.l + W - 130}" y="${pad.t + 6 + i * 18}" width="12" height="3" fill="${s.color}"/>`,
    );
    out.push(`<text x="${pad.l + W - 112}" y="${pad.t + 11 + i * 18}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
