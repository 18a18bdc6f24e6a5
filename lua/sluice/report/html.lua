-- A report as one self-contained HTML page: the totals and the legend in
-- plain HTML, the streams as JSON in the page, and a small script that draws
-- them as SVG: one row a stream (only the rows in sight are in the DOM, so
-- 10,000 of them scroll as fast as 10), or past a threshold a band of how
-- many streams were open over time, with a button to show the rows. Zoom by
-- dragging over a time range (or Ctrl+wheel, W/S, A/D to pan, 0 to reset);
-- sort by start, duration or tokens; hover for the text received so far.
-- No network: nothing is loaded from anywhere.
local cjson = require "cjson"
local model = require "sluice.report.model"
local style = require "sluice.report.style"

local esc = style.escape

local M = {}

local function us(t) return t and math.floor(t * 1e6 + 0.5) / 1e6 end

-- JavaScript string offsets (UTF-16 code units) of a text's byte offsets.
local function utf16_offsets(text, offsets)
  if not text:find("[\128-\255]") then return offsets end  -- ASCII: the same
  local out, units, pos = {}, 0, 1
  for i, off in ipairs(offsets) do
    if off >= pos then
      local seg = text:sub(pos, off)
      local ok, n = pcall(function()
        local c = 0
        for _, cp in utf8.codes(seg) do c = c + (cp >= 0x10000 and 2 or 1) end
        return c
      end)
      units = units + (ok and n or #seg)
      pos = off + 1
    end
    out[i] = units
  end
  return out
end

-- The data the script draws: times in seconds from the first start.
local function data(m, opts)
  local t0 = m.t0
  local streams = {}
  for i, s in ipairs(m.streams) do
    local ticks = {}
    for k, t in ipairs(s.ticks) do ticks[k] = us(t - t0) end
    local tools
    if s.tools then
      tools = {}
      for k, tool in ipairs(s.tools) do
        tools[k] = { tostring(tool.name), us(tool.start - t0), tool.stop and us(tool.stop - t0) or cjson.null,
                     tool.ok == true }
      end
    end
    local function rel(t) return t and us(t - t0) end
    streams[i] = {
      id = tostring(s.id), l = s.label, o = s.outcome, s = rel(s.start), f = rel(s.first), e = rel(s.ends),
      p = rel(s.stop), c = rel(s.close), v = rel(s.confirm), vh = s.confirm_how, r = s.reason,
      st = s.status, k = ticks, x = s.text, q = #s.offsets > 0 and utf16_offsets(s.text, s.offsets) or nil,
      m = s.max_tokens, n = s.saved, g = rel(s.ghost), pol = s.policy, mod = s.model, est = s.estimated or nil,
      tl = tools,
    }
  end
  return {
    kind = m.kind, source = m.source, span = us(m.t1 - m.t0), outer = us(m.t1_ghost - m.t0),
    relative = m.relative or false,
    threshold = opts.rows or 200, streams = streams, colours = style.colours, marks = style.marks, paths = style.MARK_D,
    row = style.ROW, label = style.LABEL,
  }
end

local CSS = [[
*{box-sizing:border-box}
body{margin:0;font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;background:#fff}
header{padding:10px 14px 4px;border-bottom:1px solid #ddd}
h1{font-size:16px;margin:0 0 6px}
h1 .src{font-weight:normal;color:#666;font-family:ui-monospace,monospace;font-size:13px}
#totals{display:flex;flex-wrap:wrap;gap:4px 18px}
#totals .stat b{font-size:15px}
#totals .stopped b{color:#c25e00}#totals .failed b{color:#c0392b}
.notes{color:#777;font-size:12px;margin:4px 0 0;padding:0;list-style:none}
#controls{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;padding:6px 14px;border-bottom:1px solid #eee}
#controls label{white-space:nowrap}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;vertical-align:-1px}
button{font:inherit;padding:1px 8px}
#range{color:#555;font-variant-numeric:tabular-nums}
#legend{padding:4px 14px;color:#444;font-size:12px;display:flex;flex-wrap:wrap;gap:4px 14px}
#legend svg{vertical-align:middle}
#chart{position:relative;user-select:none}
#axis,#band{display:block}
#scroll{overflow-y:auto;overflow-x:hidden;position:relative}
#spacer{position:relative}
#rows{position:absolute;left:0;display:block}
#collapsed{padding:8px 14px;color:#444}
#sel{position:absolute;top:0;bottom:0;background:rgba(60,120,220,.15);border:1px solid rgba(60,120,220,.6);
  pointer-events:none;display:none}
#tip{position:fixed;z-index:2;max-width:520px;background:#fffef6;border:1px solid #bbb;border-radius:4px;
  padding:6px 8px;box-shadow:0 2px 8px rgba(0,0,0,.15);pointer-events:none;display:none;font-size:12px}
#tip .text{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-word;background:#f4f4f4;
  padding:3px 5px;margin-top:4px;max-height:180px;overflow:hidden}
.label{font-size:12px;fill:#222}
.axis text{font-size:11px;fill:#555}.axis line{stroke:#e3e3e3}
.rowbg{fill:#f7f7f7}
.ticks{stroke-width:1}
.mark.close{stroke-width:2.5}
.wait{stroke-dasharray:2 2}
.why{font-size:11px}
]]

-- The script. D is the data; everything it draws is in #axis, #band, #rows.
local JS = [==[
(function () {
'use strict';
var D = JSON.parse(document.getElementById('data').textContent);
var S = Array.isArray(D.streams) ? D.streams : [], RH = D.row, LW = D.label, C = D.colours, MK = D.marks, MD = D.paths;
var $ = function (id) { return document.getElementById(id); };
var axis = $('axis'), band = $('band'), rows = $('rows'), scroll = $('scroll'), spacer = $('spacer');
var tip = $('tip'), sel = $('sel'), chart = $('chart');
// the view opens on what happened; zooming out goes as far as the tokens saved would have gone
var span = D.span > 0 ? D.span : 1e-6, home = span * 1.03, outer = Math.max(home, D.outer || 0);
var st = { view: [0, home], sort: 'start', show: { finished: 1, stopped: 1, failed: 1, open: 1 },
           expanded: !(D.threshold > 0 && S.length > D.threshold) };
var order = [];
S.forEach(function (s) { if (!Array.isArray(s.k)) s.k = []; });  // an empty list comes as {}
var big = D.threshold > 0 && S.length > D.threshold;  // 0: always the rows

// the hash: #sort=tokens&zoom=0.1,0.2&expand&show=stopped,failed
(function () {
  var h = location.hash.replace(/^#/, '');
  if (!h) return;
  h.split('&').forEach(function (kv) {
    var p = kv.split('='), k = p[0], v = p[1];
    if (k === 'sort' && /^(start|duration|tokens)$/.test(v)) st.sort = v;
    else if (k === 'zoom') {
      var z = v.split(',').map(Number);
      if (z.length === 2 && z[1] > z[0]) st.view = z;
    } else if (k === 'expand') st.expanded = true;
    else if (k === 'hover') st.hover = v.split(',');  // a stream's tip at a time: hover=ID,SECONDS
    else if (k === 'show') {
      st.show = {};
      v.split(',').forEach(function (o) { st.show[o] = 1; });
    }
  });
})();

function esc(s) {
  return String(s).replace(/[&<>"']/g, function (c) {
    return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
  });
}
function dur(d) {
  if (d === null || d === undefined) return '-';
  var a = Math.abs(d), s = d < 0 ? '-' : '';
  if (a < 1e-3) return s + (a * 1e6).toFixed(0) + ' us';
  if (a < 1) return s + +(a * 1e3).toPrecision(3) + ' ms';
  return s + +a.toPrecision(3) + ' s';
}
function width() { return Math.max(300, chart.clientWidth); }
function cw() { return width() - LW - 18; }  // the rows' scrollbar stays clear
function xOf(t) { return LW + (t - st.view[0]) / (st.view[1] - st.view[0]) * cw(); }
function tOf(x) { return st.view[0] + (x - LW) / cw() * (st.view[1] - st.view[0]); }
function f1(x) { return Math.round(x * 10) / 10; }

function reorder() {
  order = [];
  for (var i = 0; i < S.length; i++) if (st.show[S[i].o]) order.push(i);
  var key = st.sort === 'duration' ? function (s) { return -(s.e - s.s); }
          : st.sort === 'tokens' ? function (s) { return -s.k.length; }
          : function (s) { return s.s; };
  order.sort(function (a, b) { var d = key(S[a]) - key(S[b]); return d !== 0 ? d : a - b; });
}

function drawAxis() {
  var w = width(), v0 = st.view[0], v1 = st.view[1], sp = v1 - v0;
  var raw = sp / Math.max(2, Math.floor(cw() / 110)), p = Math.pow(10, Math.floor(Math.log10(raw))), step = p;
  [1, 2, 5, 10].some(function (k) { step = k * p; return k * p >= raw; });
  var out = [];
  for (var t = Math.ceil(v0 / step) * step; t <= v1 + step * 1e-9; t += step) {
    var x = f1(xOf(t));
    out.push('<line x1="' + x + '" x2="' + x + '" y1="14" y2="22"/><text x="' + x + '" y="11" text-anchor="middle">' +
             label(t) + '</text>');
  }
  axis.setAttribute('width', w);
  axis.innerHTML = '<g class="axis">' + out.join('') + '</g>' +
    '<text x="8" y="11" class="label">' + (D.relative ? 'from each start' : 'from the first start') + '</text>';
  $('range').textContent = 'view ' + dur(v0) + ' to ' + dur(v1) + ' of ' + dur(span) +
    (outer > span ? ' (' + dur(outer) + ' with the tokens saved)' : '');
}
function label(t) {
  var a = Math.abs(t);
  if (a < 1e-12) return '0';
  if (a < 1e-3) return +(t * 1e6).toPrecision(3) + ' us';
  if (a < 1) return +(t * 1e3).toPrecision(3) + ' ms';
  return +t.toPrecision(4) + ' s';
}

// the aggregate: streams open per outcome, stacked, and tokens per bucket
function drawBand() {
  if (!big) { band.style.display = 'none'; return; }
  band.style.display = 'block';
  var w = width(), H = 64, n = Math.max(10, Math.floor(cw() / 3)), v0 = st.view[0], v1 = st.view[1];
  var bw = (v1 - v0) / n, outs = ['finished', 'stopped', 'failed', 'open'], diff = {}, tok = new Float64Array(n);
  outs.forEach(function (o) { diff[o] = new Float64Array(n + 1); });
  for (var j = 0; j < order.length; j++) {
    var s = S[order[j]];
    if (s.e < v0 || s.s > v1) continue;
    var b0 = Math.max(0, Math.floor((s.s - v0) / bw)), b1 = Math.min(n - 1, Math.floor((s.e - v0) / bw));
    diff[s.o][b0]++; diff[s.o][b1 + 1]--;
    for (var k = 0; k < s.k.length; k++) {
      var b = Math.floor((s.k[k] - v0) / bw);
      if (b >= 0 && b < n) tok[b]++;
    }
  }
  var acc = new Float64Array(n), max = 1, maxTok = 1, layers = [];
  outs.forEach(function (o) {
    var run = 0, top = new Float64Array(n);
    for (var b = 0; b < n; b++) { run += diff[o][b]; acc[b] += run; top[b] = acc[b]; if (acc[b] > max) max = acc[b]; }
    layers.push([o, top]);
  });
  for (var b = 0; b < n; b++) if (tok[b] > maxTok) maxTok = tok[b];
  var out = [], bx = cw() / n;
  for (var li = layers.length - 1; li >= 0; li--) {  // the highest first, the others over it
    var top = layers[li][1], d = 'M' + LW + ' ' + H;
    for (b = 0; b < n; b++) {
      var y = f1(H - top[b] / max * (H - 4));
      d += 'V' + y + 'H' + f1(LW + (b + 1) * bx);
    }
    d += 'V' + H + 'Z';
    out.push('<path class="layer" data-outcome="' + layers[li][0] + '" fill="' + C[layers[li][0]].bar +
             '" d="' + d + '"/>');
  }
  var td = '';
  for (b = 0; b < n; b++) td += (b ? 'L' : 'M') + f1(LW + (b + 0.5) * bx) + ' ' + f1(H - tok[b] / maxTok * (H - 4));
  out.push('<path class="tokrate" fill="none" stroke="#222" stroke-opacity="0.6" stroke-width="1" d="' + td + '"/>');
  out.push('<text class="label" x="8" y="16">open streams</text><text class="label" x="8" y="32" fill="#555">' +
           'at most ' + max + '</text><text class="label" x="8" y="48">tokens/s (line)</text>' +
           '<text class="label" x="8" y="62" fill="#555">at most ' + Math.round(maxTok / bw) + '</text>');
  band.setAttribute('width', w);
  band.setAttribute('height', H + 4);
  band.innerHTML = '<g id="bandg" data-open-max="' + max + '">' + out.join('') + '</g>';
  band.bucket = { n: n, bw: bw, layers: layers, tok: tok };
}

function row(i, y, j) {
  var s = S[i], c = C[s.o], v0 = st.view[0], v1 = st.view[1], L = LW, R = LW + cw();
  var cl = function (x) { return f1(Math.max(L, Math.min(R, x))); };
  var out = ['<g class="row" data-id="' + esc(s.id) + '" data-outcome="' + s.o + '" data-tokens="' + s.k.length +
             '" transform="translate(0,' + y + ')">'];
  if (j % 2 === 1) out.push('<rect class="rowbg" x="0" y="0" width="' + R + '" height="' + RH + '"/>');
  out.push('<text class="label" x="6" y="13">' + esc(s.l.length > 26 ? s.l.slice(0, 25) + '\u2026' : s.l) + '</text>');
  var first = s.f !== null && s.f !== undefined ? s.f : s.e;
  if (s.e >= v0 && s.s <= v1) {
    if (first > s.s) out.push('<line class="wait" stroke="' + c.bar + '" x1="' + cl(xOf(s.s)) + '" x2="' +
                              cl(xOf(first)) + '" y1="9" y2="9"/>');
    var bx0 = cl(xOf(first)), bx1 = cl(xOf(s.e));
    out.push('<rect class="bar" fill="' + c.bar + '" fill-opacity="0.45" x="' + bx0 + '" y="4" width="' +
             f1(Math.max(s.o === 'failed' ? 3 : 1, bx1 - bx0)) + '" height="10"/>');
  }
  if (s.g && s.c !== null && s.c !== undefined && s.g > v0 && s.c < v1) {  // the generation saved, at its pace
    var gx0 = cl(xOf(s.c)), gx1 = cl(xOf(s.g));
    if (gx1 - gx0 >= 2) out.push('<rect class="ghost" fill="none" stroke="' + c.bar + '" stroke-dasharray="3 2" x="' +
                                 gx0 + '" y="5" width="' + f1(gx1 - gx0) + '" height="8"/>');
  }
  var d = '', n = 0;
  for (var k = 0; k < s.k.length; k++) {
    var t = s.k[k];
    if (t < v0 || t > v1) continue;
    d += 'M' + f1(xOf(t)) + ' 3v12';
    n++;
  }
  out.push('<path class="ticks" stroke="' + c.tick + '" data-n="' + n + '" d="' + d + '"/>');
  if (s.tl) s.tl.forEach(function (tl) {
    var a = tl[1], b = tl[2] === null ? s.e : tl[2];
    if (b < v0 || a > v1) return;
    out.push('<rect class="tool" fill="' + MK.tool + '" x="' + cl(xOf(a)) + '" y="15" height="3" width="' +
             f1(Math.max(1, cl(xOf(b)) - cl(xOf(a)))) + '"/>');
  });
  function mark(kind, t, path, paint) {
    if (t === null || t === undefined || t < v0 || t > v1) return;
    out.push('<path class="mark ' + kind + '" ' + paint + ' d="M' + f1(xOf(t)) + ' ' + path + '"/>');
  }
  mark('start', s.s, MD.start, 'stroke="' + MK.start + '"');
  mark('first', s.f, MD.first, 'fill="#fff" stroke="' + MK.first + '"');
  mark('close', s.c, MD.close, 'stroke="' + MK.close + '"');
  mark('stop', s.p, MD.stop, 'fill="' + MK.stop + '"');
  mark('confirm', s.v, MD.confirm, 'fill="' + MK.confirm + '" fill-opacity="0.8"');
  var why = s.o === 'finished' ? '' : s.r || (s.o === 'open' ? 'no end in the input' : '');
  var wx = xOf(s.e) + 8;
  if (why && wx < R - 40 && s.e <= v1) out.push('<text class="why" x="' + f1(wx) + '" y="13" fill="' + c.tick + '">' +
                                               esc(why.length > 40 ? why.slice(0, 39) + '\u2026' : why) + '</text>');
  out.push('</g>');
  return out.join('');
}

var drawn = [-1, -1];
function drawRows(force) {
  var w = width();
  if (!st.expanded) {
    scroll.style.display = 'none';
    $('collapsed').style.display = 'block';
    rows.innerHTML = '';
    drawn = [-1, -1];
    return;
  }
  $('collapsed').style.display = 'none';
  scroll.style.display = 'block';
  var total = order.length * RH;
  spacer.style.height = total + 'px';
  var avail = Math.max(200, window.innerHeight - scroll.getBoundingClientRect().top - 6);
  scroll.style.height = Math.min(total + 2, avail) + 'px';
  var top = scroll.scrollTop, h = scroll.clientHeight || avail;
  var i0 = Math.max(0, Math.floor(top / RH) - 10), i1 = Math.min(order.length, Math.ceil((top + h) / RH) + 10);
  if (!force && i0 === drawn[0] && i1 === drawn[1]) return;
  drawn = [i0, i1];
  var out = [];
  for (var j = i0; j < i1; j++) out.push(row(order[j], (j - i0) * RH, j));
  rows.setAttribute('width', w);
  rows.setAttribute('height', Math.max(1, (i1 - i0) * RH));
  rows.setAttribute('data-x0', LW);
  rows.setAttribute('data-w', cw());
  rows.setAttribute('data-v0', st.view[0]);
  rows.setAttribute('data-v1', st.view[1]);
  rows.setAttribute('data-first', i0);
  rows.style.top = (i0 * RH) + 'px';
  rows.innerHTML = out.join('');
}

function draw() { drawAxis(); drawBand(); drawRows(true); }

function setHash() {
  var parts = [];
  if (st.sort !== 'start') parts.push('sort=' + st.sort);
  if (st.view[0] > 0 || st.view[1] !== home) {
    parts.push('zoom=' + +st.view[0].toFixed(6) + ',' + +st.view[1].toFixed(6));
  }
  if (big && st.expanded) parts.push('expand');
  try { history.replaceState(null, '', parts.length ? '#' + parts.join('&') : location.pathname); } catch (e) {}
}

function zoomTo(a, b) {
  var min = span * 1e-6 + 1e-7;
  if (b - a < min) { var m = (a + b) / 2; a = m - min / 2; b = m + min / 2; }
  var w = b - a;
  if (w >= outer) { a = 0; b = outer; }
  else { if (a < 0) { a = 0; b = w; } if (b > outer) { b = outer; a = outer - w; } }
  st.view = [a, b];
  draw();
  setHash();
}
function zoomBy(f, at) {
  var v0 = st.view[0], v1 = st.view[1];
  if (at === undefined) at = (v0 + v1) / 2;
  zoomTo(at - (at - v0) * f, at + (v1 - at) * f);
}
function pan(f) { var w = st.view[1] - st.view[0]; zoomTo(st.view[0] + w * f, st.view[1] + w * f); }

// controls
$('sort').value = st.sort;
$('sort').addEventListener('change', function () { st.sort = this.value; reorder(); draw(); setHash(); });
Array.prototype.forEach.call(document.querySelectorAll('#controls input[data-o]'), function (box) {
  box.checked = !!st.show[box.getAttribute('data-o')];
  box.addEventListener('change', function () {
    st.show[this.getAttribute('data-o')] = this.checked ? 1 : 0;
    reorder(); draw();
  });
});
$('zin').addEventListener('click', function () { zoomBy(0.5); });
$('zout').addEventListener('click', function () { zoomBy(2); });
$('zreset').addEventListener('click', function () { zoomTo(0, home); });
var ex = $('expand');
if (big) {
  ex.style.display = '';
  var exText = function () {
    ex.textContent = st.expanded ? 'fold the rows' : 'show all ' + S.length.toLocaleString('en') + ' rows';
  };
  exText();
  ex.addEventListener('click', function () { st.expanded = !st.expanded; exText(); drawRows(true); setHash(); });
  $('collapsed-show').addEventListener('click', function () { ex.click(); });
}
scroll.addEventListener('scroll', function () { requestAnimationFrame(function () { drawRows(false); }); });
var resizing = 0;
window.addEventListener('resize', function () {
  if (resizing) return;
  resizing = requestAnimationFrame(function () { resizing = 0; draw(); });
});
document.addEventListener('keydown', function (e) {
  if (e.target && /INPUT|SELECT|TEXTAREA/.test(e.target.tagName)) return;
  var k = e.key.toLowerCase();
  if (k === 'w') zoomBy(0.7, hoverT);
  else if (k === 's') zoomBy(1 / 0.7, hoverT);
  else if (k === 'a') pan(-0.2);
  else if (k === 'd') pan(0.2);
  else if (k === '0' || k === 'escape') zoomTo(0, home);
});
chart.addEventListener('wheel', function (e) {
  if (!(e.ctrlKey || e.metaKey) && e.target.closest('#scroll')) return;  // a plain wheel scrolls the rows
  var x = e.clientX - chart.getBoundingClientRect().left;
  if (x < LW) return;
  e.preventDefault();
  zoomBy(Math.pow(1.0015, e.deltaY), tOf(x));
}, { passive: false });

// drag over a time range to zoom to it
var dragFrom = null, hoverT;
chart.addEventListener('mousedown', function (e) {
  var x = e.clientX - chart.getBoundingClientRect().left;
  if (x < LW || x > LW + cw() || e.button !== 0) return;
  dragFrom = x;
  e.preventDefault();
});
window.addEventListener('mousemove', function (e) {
  var r = chart.getBoundingClientRect(), x = e.clientX - r.left;
  if (dragFrom === null) return;
  var a = Math.max(LW, Math.min(dragFrom, x)), b = Math.min(LW + cw(), Math.max(dragFrom, x));
  sel.style.display = 'block'; sel.style.left = a + 'px'; sel.style.width = (b - a) + 'px';
});
window.addEventListener('mouseup', function (e) {
  if (dragFrom === null) return;
  var x = e.clientX - chart.getBoundingClientRect().left, a = Math.min(dragFrom, x), b = Math.max(dragFrom, x);
  dragFrom = null;
  sel.style.display = 'none';
  if (b - a > 4) zoomTo(tOf(Math.max(LW, a)), tOf(Math.min(LW + cw(), b)));
});

// hover: the stream under the pointer, and what it had received by then
function count(ticks, t) {
  var lo = 0, hi = ticks.length;
  while (lo < hi) { var m = (lo + hi) >> 1; if (ticks[m] <= t) lo = m + 1; else hi = m; }
  return lo;
}
function tipFor(s, t) {
  var h = ['<b>' + esc(s.l) + '</b> <span style="color:' + C[s.o].bar + '">&#9632; ' + s.o + '</span>'];
  if (s.r) h.push(' &mdash; ' + esc(s.r));
  var lines = [];
  lines.push((D.relative ? '' : 'start +' + dur(s.s) + ' &middot; ') + 'first token ' +
             (s.f !== null && s.f !== undefined ? '+' + dur(s.f - s.s) : '-') + ' &middot; lasted ' + dur(s.e - s.s));
  var tk = s.k.length + ' tokens';
  if (s.m) tk += ' of max_tokens ' + s.m;
  if (s.n !== undefined && s.n !== null) tk += ', <b>' + s.n + ' saved</b>' +
    (s.g ? ' (about ' + dur(s.g - s.c) + ' of generation at its pace)' : '');
  lines.push(tk + (s.st ? ' &middot; HTTP ' + s.st : '') + (s.mod ? ' &middot; ' + esc(s.mod) : '') +
             (s.pol ? ' &middot; policy ' + esc(s.pol) : ''));
  var m = [];
  var has = function (v) { return v !== undefined && v !== null; };
  if (has(s.p) && has(s.c)) m.push('decision&rarr;close ' + dur(s.c - s.p));
  if (has(s.v) && has(s.c)) {
    m.push('close&rarr;server stopped ' + dur(s.v - s.c) + (s.vh ? ' (' + esc(s.vh) + ')' : ''));
  }
  if (m.length) lines.push(m.join(' &middot; '));
  if (s.tl) lines.push('tools: ' + s.tl.map(function (x) {
    return esc(x[0]) + (x[2] !== null ? ' ' + dur(x[2] - x[1]) : '') + (x[3] ? '' : ' (failed)');
  }).join(', '));
  if (s.est) lines.push('<i>token times spread evenly (the input keeps no times)</i>');
  var n = t >= s.e ? s.k.length : count(s.k, t), text = s.x || '';
  var upto = s.q ? (n > 0 ? s.q[n - 1] : 0) : text.length;
  var so = text.slice(0, upto), more = text.length > so.length || n < s.k.length;
  if (so.length > 600) so = '\u2026' + so.slice(so.length - 600);
  lines.push('text ' + (s.q ? 'by +' + dur(Math.max(0, t - s.s)) + ' (' + n + ' tokens)' : 'received') + ':');
  return h.join('') + '<br>' + lines.join('<br>') + '<div class="text">' + esc(so) + (more ? '\u2026' : '') +
         (so ? '' : '<i>(none yet)</i>') + '</div>';
}
function tipBand(b) {
  var info = band.bucket, v0 = st.view[0];
  var h = ['<b>' + dur(v0 + b * info.bw) + ' to ' + dur(v0 + (b + 1) * info.bw) + '</b>'], below = 0;
  info.layers.forEach(function (l) { var v = l[1][b] - below; below = l[1][b]; if (v) h.push(v + ' ' + l[0]); });
  h.push(Math.round(info.tok[b] / info.bw) + ' tokens/s');
  return h.join('<br>');
}
function showTip(html, e) {
  tip.innerHTML = html;
  tip.style.display = 'block';
  var x = e.clientX + 14, y = e.clientY + 14, r = tip.getBoundingClientRect();
  if (x + r.width > window.innerWidth - 4) x = Math.max(4, e.clientX - r.width - 14);
  if (y + r.height > window.innerHeight - 4) y = Math.max(4, e.clientY - r.height - 14);
  tip.style.left = x + 'px'; tip.style.top = y + 'px';
}
chart.addEventListener('mousemove', function (e) {
  var r = chart.getBoundingClientRect(), x = e.clientX - r.left;
  hoverT = x >= LW ? tOf(x) : undefined;
  if (dragFrom !== null) { tip.style.display = 'none'; return; }
  if (e.target.closest('#scroll') && st.expanded) {
    var j = Math.floor((e.clientY - spacer.getBoundingClientRect().top) / RH);
    if (j >= 0 && j < order.length) { showTip(tipFor(S[order[j]], x >= LW ? tOf(x) : Infinity), e); return; }
  } else if (e.target.closest('#band') && band.bucket && x >= LW) {
    var b = Math.floor((x - LW) / cw() * band.bucket.n);
    if (b >= 0 && b < band.bucket.n) { showTip(tipBand(b), e); return; }
  }
  tip.style.display = 'none';
});
chart.addEventListener('mouseleave', function () { tip.style.display = 'none'; hoverT = undefined; });

reorder();
draw();
if (st.hover) {
  var hid = decodeURIComponent(st.hover[0]), ht = Number(st.hover[1]);
  order.some(function (i, j) {
    var s = S[i];
    if (s.id !== hid) return false;
    var y = st.expanded ? spacer.getBoundingClientRect().top + (j + 1) * RH : chart.getBoundingClientRect().top + 40;
    showTip(tipFor(s, ht), { clientX: chart.getBoundingClientRect().left + xOf(ht), clientY: y });
    return true;
  });
}
document.body.setAttribute('data-ready', '1');
})();
]==]

-- A small SVG of a mark for the legend.
local function legend_icon(kind)
  return ('<svg width="14" height="18"><path %s d="%s"/></svg>'):format(style.mark_paint[kind], style.mark_path(kind, 7))
end

local function stat(key, value, text, class)
  return ('<span class="stat%s" data-total="%s"><b>%s</b> %s</span>'):format(class and " " .. class or "", key,
                                                                            esc(value), text)
end

-- render(model, { rows = threshold, title = }) -> the page.
function M.render(m, opts)
  opts = opts or {}
  local t = m.totals
  local count, dur = model.count, model.duration
  local kind = model.KIND_NAMES[m.kind]
  local title = opts.title or ("sluice report: " .. tostring(m.source or kind))
  local saved
  if t.saved_known > 0 then saved = count(t.saved)
  elseif t.stopped == 0 then saved = "0"
  else saved = "unknown" end
  local stats = {
    stat("streams", count(t.streams), "streams"),
    stat("finished", count(t.finished), "finished", "finished"),
    stat("stopped", count(t.stopped), "stopped early", "stopped"),
    stat("failed", count(t.failed), "failed", "failed"),
  }
  if t.open > 0 then stats[#stats + 1] = stat("open", count(t.open), "with no end") end
  stats[#stats + 1] = stat("tokens", count(t.tokens), "tokens received")
  stats[#stats + 1] = stat("saved", saved, "tokens saved" ..
    (t.saved_known > 0 and t.saved_unknown > 0 and (" (max_tokens known for %d of %d stopped)"):format(
      t.saved_known, t.stopped) or (t.saved_known == 0 and t.stopped > 0 and " (no max_tokens)" or "")))
  stats[#stats + 1] = stat("decision_close", dur(t.decision_close), "median decision&rarr;close" ..
    (t.decision_close_n > 0 and (" (%d)"):format(t.decision_close_n) or ""))
  stats[#stats + 1] = stat("close_confirm", dur(t.close_confirm), "median close&rarr;server stopped" ..
    (t.close_confirm_n > 0 and (" (%d)"):format(t.close_confirm_n) or ""))
  if t.decision_confirm_n > 0 then
    stats[#stats + 1] = stat("decision_confirm", dur(t.decision_confirm), "median decision&rarr;server stopped")
  end
  stats[#stats + 1] = stat("span", dur(t.span), m.relative and "longest request" or "from first start to last end")

  local notes = {}
  for _, n in ipairs(m.notes) do notes[#notes + 1] = "<li>" .. esc(n) .. "</li>" end
  if m.plain > 0 then
    notes[#notes + 1] = ("<li>%d plain request%s with no events (such as sluice.fetch) left out</li>"):format(
      m.plain, m.plain == 1 and "" or "s")
  end

  local filters = {}
  for _, o in ipairs(model.OUTCOMES) do
    if t[o] > 0 then
      filters[#filters + 1] = ('<label><input type="checkbox" data-o="%s" checked> <i class="sw" ' ..
                               'style="background:%s"></i> %s (%s)</label>'):format(
        o, style.colours[o].bar, o == "open" and "no end" or o, count(t[o]))
    end
  end

  local legend = {
    legend_icon("start") .. " request sent",
    legend_icon("first") .. " first token",
    ('<svg width="14" height="18"><path stroke="#333" d="M4 3v12M7 3v12M10 3v12"/></svg> tokens'),
    legend_icon("stop") .. " stop decision",
    legend_icon("close") .. " socket closed",
    legend_icon("confirm") .. " server stopped",
    ('<svg width="22" height="18"><rect x="1" y="5" width="20" height="8" fill="none" stroke="#888" ' ..
     'stroke-dasharray="3 2"/></svg> tokens saved, at the stream\'s own pace'),
    ('<svg width="22" height="18"><rect x="1" y="14" width="20" height="3" fill="%s"/></svg> tool call'):format(
      style.marks.tool),
  }

  local json = cjson.encode(data(m, opts)):gsub("</", "<\\/")
  return table.concat {
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width,initial-scale=1">',
    '<title>', esc(title), '</title><style>', CSS, '</style></head>\n<body>\n',
    '<header><h1>sluice report <span class="src">', esc(kind), ' ', esc(m.source or ""), '</span></h1>\n',
    '<div id="totals">', table.concat(stats, "\n"), '</div>\n',
    #notes > 0 and ('<ul class="notes">' .. table.concat(notes) .. '</ul>') or "", '</header>\n',
    '<div id="controls"><label>sort by <select id="sort"><option value="start">start</option>',
    '<option value="duration">duration</option><option value="tokens">tokens</option></select></label>',
    table.concat(filters), '<span><button id="zin" title="zoom in (W)">+</button> ',
    '<button id="zout" title="zoom out (S)">&minus;</button> <button id="zreset" title="0">reset zoom</button></span>',
    '<span id="range"></span><button id="expand" style="display:none"></button>',
    '<span style="color:#888">drag over a time range to zoom; Ctrl+wheel, W/S, A/D</span></div>\n',
    '<div id="legend">', table.concat(legend, " "), '</div>\n',
    '<div id="chart"><svg id="axis" height="24"></svg><svg id="band"></svg>',
    '<div id="collapsed" style="display:none">', count(#m.streams), ' streams: the band above shows how many ',
    'were open at each moment, by outcome, and the tokens a second. <button id="collapsed-show">show all rows</button>',
    '</div><div id="scroll"><div id="spacer"><svg id="rows"></svg></div></div><div id="sel"></div></div>\n',
    '<div id="tip"></div>\n',
    '<script type="application/json" id="data">', json, '</script>\n',
    '<script>', JS, '</script>\n</body></html>\n',
  }
end

return M
