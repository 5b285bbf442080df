#!/usr/bin/env node
// Draws Weft's tray icons (one per connection state, in light, dark and macOS-template variants)
// and the app icon, as SVG sources and PNGs, with no downloads and no native modules: shapes are
// rasterised here with 4×4 supersampling and written with node:zlib.
//   node assets/make-icons.mjs [--out DIR]     (default: this folder)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const outArg = process.argv.indexOf('--out');
const OUT = outArg > 0 ? process.argv[outArg + 1] : here;

export const STATES = ['disconnected', 'connecting', 'connected', 'exit-node', 'needs-login', 'error'];
export const VARIANTS = ['light', 'dark', 'template'];

// ───────────── shapes, in a 24×24 design space ─────────────
// { type: 'circle', x, y, r } | { type: 'ring', x, y, r, w } | { type: 'line', x1, y1, x2, y2, w }
const NODES = [
  [7, 7],
  [17, 7],
  [7, 17],
  [17, 17],
];
const LINES = [
  [3, 7, 21, 7],
  [3, 17, 21, 17],
  [7, 3, 7, 21],
  [17, 3, 17, 21],
];

const INK = { light: '#1f2328', dark: '#f0f3f6', template: '#000000' };
const BADGE = {
  'exit-node': { light: '#1f5fd6', dark: '#7ea3ff' },
  'needs-login': { light: '#b7791f', dark: '#f2c14e' },
  error: { light: '#cf222e', dark: '#ff7b72' },
};

/** Layers for one state: [{ shapes, color, alpha, erase? }] painted in order. */
function layers(state, variant) {
  const ink = INK[variant];
  const line = (alpha) => ({
    shapes: LINES.map(([x1, y1, x2, y2]) => ({ type: 'line', x1, y1, x2, y2, w: 2 })),
    color: ink,
    alpha,
  });
  const dots = (filled) =>
    NODES.map(([x, y], i) =>
      filled === true || (Array.isArray(filled) && filled.includes(i))
        ? { type: 'circle', x, y, r: 3.2 }
        : { type: 'ring', x, y, r: 3.2, w: 1.7 },
    );
  const knock = (x, y, r) => ({ shapes: [{ type: 'circle', x, y, r }], erase: true });
  // Knock the lines out around each node so rings read as rings.
  const holes = { shapes: NODES.map(([x, y]) => ({ type: 'circle', x, y, r: 3.2 })), erase: true };
  const base = {
    connected: [line(1), holes, { shapes: dots(true), color: ink, alpha: 1 }],
    'exit-node': [line(1), holes, { shapes: dots(true), color: ink, alpha: 1 }],
    connecting: [line(0.45), holes, { shapes: dots([0, 3]), color: ink, alpha: 1 }],
    disconnected: [line(0.4), holes, { shapes: dots(false), color: ink, alpha: 0.75 }],
    'needs-login': [line(0.4), holes, { shapes: dots(false), color: ink, alpha: 0.75 }],
    error: [line(0.4), holes, { shapes: dots(false), color: ink, alpha: 0.75 }],
  }[state];
  if (!BADGE[state]) return base;
  const color = variant === 'template' ? ink : BADGE[state][variant];
  const bx = 18.5;
  const by = 18.5;
  const out = [
    ...base,
    knock(bx, by, 6.8),
    { shapes: [{ type: 'circle', x: bx, y: by, r: 5.4 }], color, alpha: 1 },
  ];
  if (state === 'exit-node') {
    // an arrow leaving: ↗
    out.push({
      shapes: [
        { type: 'line', x1: 16.3, y1: 20.7, x2: 20.4, y2: 16.6, w: 1.5 },
        { type: 'line', x1: 17.4, y1: 16.6, x2: 20.4, y2: 16.6, w: 1.5 },
        { type: 'line', x1: 20.4, y1: 16.6, x2: 20.4, y2: 19.6, w: 1.5 },
      ],
      erase: true,
    });
  } else if (state === 'error') {
    out.push({
      shapes: [
        { type: 'line', x1: 16.4, y1: 16.4, x2: 20.6, y2: 20.6, w: 1.6 },
        { type: 'line', x1: 20.6, y1: 16.4, x2: 16.4, y2: 20.6, w: 1.6 },
      ],
      erase: true,
    });
  } else {
    // needs-login: a keyhole
    out.push({
      shapes: [
        { type: 'circle', x: bx, y: 17.4, r: 1.4 },
        { type: 'line', x1: bx, y1: 17.6, x2: bx, y2: 20.6, w: 1.3 },
      ],
      erase: true,
    });
  }
  return out;
}

function inside(s, x, y) {
  if (s.type === 'circle') return (x - s.x) ** 2 + (y - s.y) ** 2 <= s.r * s.r;
  if (s.type === 'ring') {
    const d = Math.sqrt((x - s.x) ** 2 + (y - s.y) ** 2);
    return d <= s.r && d >= s.r - s.w;
  }
  // line: capsule
  const dx = s.x2 - s.x1;
  const dy = s.y2 - s.y1;
  const t = Math.max(0, Math.min(1, ((x - s.x1) * dx + (y - s.y1) * dy) / (dx * dx + dy * dy)));
  const px = s.x1 + t * dx - x;
  const py = s.y1 + t * dy - y;
  return px * px + py * py <= (s.w / 2) ** 2;
}

const hex = (c) => [1, 3, 5].map((i) => Number.parseInt(c.slice(i, i + 2), 16));

/** Rasterises layers onto a size×size RGBA buffer (premultiplied while painting). */
export function rasterise(ls, size, background = null, pad = 0) {
  const px = new Float64Array(size * size * 4);
  const S = 4;
  const scale = (24 + 2 * pad) / size;
  if (background) {
    const [r, g, b] = hex(background.color);
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) {
        let cov = 0;
        for (let sy = 0; sy < S; sy++)
          for (let sx = 0; sx < S; sx++) {
            const u = ((x + (sx + 0.5) / S) / size) * 1;
            const v = ((y + (sy + 0.5) / S) / size) * 1;
            if (roundedRect(u, v, background.radius)) cov++;
          }
        const a = cov / (S * S);
        const i = (y * size + x) * 4;
        px[i] = (r / 255) * a;
        px[i + 1] = (g / 255) * a;
        px[i + 2] = (b / 255) * a;
        px[i + 3] = a;
      }
  }
  for (const layer of ls) {
    const [r, g, b] = layer.erase ? [0, 0, 0] : hex(layer.color);
    const alpha = layer.erase ? 1 : layer.alpha;
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) {
        let cov = 0;
        for (let sy = 0; sy < S; sy++)
          for (let sx = 0; sx < S; sx++) {
            const u = (x + (sx + 0.5) / S) * scale - pad;
            const v = (y + (sy + 0.5) / S) * scale - pad;
            if (layer.shapes.some((s) => inside(s, u, v))) cov++;
          }
        if (cov === 0) continue;
        const a = (cov / (S * S)) * alpha;
        const i = (y * size + x) * 4;
        if (layer.erase && !background) {
          for (let k = 0; k < 4; k++) px[i + k] *= 1 - a;
        } else {
          const [cr, cg, cb] = layer.erase ? hex(background.ink) : [r, g, b];
          px[i] = (cr / 255) * a + px[i] * (1 - a);
          px[i + 1] = (cg / 255) * a + px[i + 1] * (1 - a);
          px[i + 2] = (cb / 255) * a + px[i + 2] * (1 - a);
          px[i + 3] = a + px[i + 3] * (1 - a);
        }
      }
  }
  const out = Buffer.alloc(size * size * 4);
  for (let i = 0; i < size * size; i++) {
    const a = px[i * 4 + 3];
    for (let k = 0; k < 3; k++) out[i * 4 + k] = a > 0 ? Math.round(Math.min(1, px[i * 4 + k] / a) * 255) : 0;
    out[i * 4 + 3] = Math.round(a * 255);
  }
  return out;
}

function roundedRect(u, v, r) {
  const cx = Math.max(r, Math.min(1 - r, u));
  const cy = Math.max(r, Math.min(1 - r, v));
  return (u - cx) ** 2 + (v - cy) ** 2 <= r * r;
}

// ───────────── PNG ─────────────
const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
export function encodePng(rgba, size) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  const raw = Buffer.alloc((size * 4 + 1) * size);
  for (let y = 0; y < size; y++) rgba.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ───────────── SVG ─────────────
function svg(ls, title, viewPad = 0, background = null) {
  const v = 24 + 2 * viewPad;
  const id = (i) => `m${i}`;
  // Erase layers become masks over everything painted before them.
  let body = '';
  let defs = '';
  ls.forEach((layer, i) => {
    const shapes = layer.shapes
      .map((s) =>
        s.type === 'circle'
          ? `<circle cx="${s.x}" cy="${s.y}" r="${s.r}"/>`
          : s.type === 'ring'
            ? `<circle cx="${s.x}" cy="${s.y}" r="${s.r - s.w / 2}" fill="none" stroke-width="${s.w}"/>`
            : `<line x1="${s.x1}" y1="${s.y1}" x2="${s.x2}" y2="${s.y2}" stroke-width="${s.w}" stroke-linecap="round"/>`,
      )
      .join('');
    if (layer.erase) {
      if (background) {
        body += `<g fill="${background.ink}" stroke="${background.ink}">${shapes}</g>`;
      } else {
        defs += `<mask id="${id(i)}" maskUnits="userSpaceOnUse" x="${-viewPad}" y="${-viewPad}" width="${v}" height="${v}"><rect x="${-viewPad}" y="${-viewPad}" width="${v}" height="${v}" fill="#fff"/><g fill="#000" stroke="#000">${shapes}</g></mask>`;
        body = `<g mask="url(#${id(i)})">${body}</g>`;
      }
    } else {
      body += `<g fill="${layer.color}" stroke="${layer.color}" opacity="${layer.alpha}">${shapes}</g>`;
    }
  });
  const bg = background
    ? `<rect x="${-viewPad}" y="${-viewPad}" width="${v}" height="${v}" rx="${v * background.radius}" fill="${background.color}"/>`
    : '';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${v}" height="${v}" viewBox="${-viewPad} ${-viewPad} ${v} ${v}" role="img"><title>${title}</title>${defs ? `<defs>${defs}</defs>` : ''}${bg}${body}</svg>\n`;
}

export function build(out = OUT) {
  const written = [];
  const write = (rel, data) => {
    const path = join(out, rel);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, data);
    written.push(rel);
  };
  for (const state of STATES) {
    for (const variant of VARIANTS) {
      const ls = layers(state, variant);
      const name = `tray/${state}-${variant}`;
      write(`${name}.svg`, svg(ls, `Weft: ${state.replace('-', ' ')}`));
      write(`${name}.png`, encodePng(rasterise(ls, 16), 16));
      write(`${name}@2x.png`, encodePng(rasterise(ls, 32), 32));
    }
  }
  // The app icon: the connected glyph in white on the accent, rounded square.
  const app = layers('connected', 'dark').map((l) => (l.erase ? l : { ...l, color: '#ffffff' }));
  const bg = { color: '#2350c8', radius: 0.22, ink: '#2350c8' };
  write('icon.svg', svg(app, 'Weft', 8, bg));
  for (const size of [512, 256])
    write(size === 512 ? 'icon.png' : `icon-${size}.png`, encodePng(rasterise(app, size, bg, 8), size));
  return written;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const files = build();
  console.log(`wrote ${files.length} files to ${OUT}`);
}
