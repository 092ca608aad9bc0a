-- moonbox.experiment.svg: line charts as SVG text, for the experiment report. One function:
-- svg.chart{title=, xlabel=, ylabel=, series = {{name=, points = {{x=, y=, lo=, hi=}}}},
-- markers = {{x=, label=}}, categories = {"a", "b"} (x as labels, not numbers)}. Each series
-- is a line with dots, and a shaded band from lo to hi where given; markers are dashed
-- vertical lines. Axes have round-number ticks.
local svg = {}

local PALETTE = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22" }

function svg.escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end
local esc = svg.escape

-- Round-number ticks covering [lo, hi]: 1, 2 or 5 times a power of ten apart.
function svg.ticks(lo, hi, count)
  count = count or 5
  if lo == hi then
    local pad = lo == 0 and 1 or math.abs(lo) * 0.1
    lo, hi = lo - pad, hi + pad
  end
  local raw = (hi - lo) / count
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local step = mag
  for _, m in ipairs({ 1, 2, 5, 10 }) do
    if raw <= m * mag then step = m * mag break end
  end
  local first = math.floor(lo / step) * step
  local last = math.ceil(hi / step) * step
  local out = {}
  local v = first
  while v <= last + step * 1e-9 do
    out[#out + 1] = math.abs(v) < step * 1e-9 and 0 or v
    v = v + step
  end
  return out, first, last
end

-- A tick's text: few digits, SI suffixes for big numbers.
function svg.format(v)
  local a = math.abs(v)
  if a >= 1e9 then return string.format("%gG", tonumber(string.format("%.3g", v / 1e9))) end
  if a >= 1e6 then return string.format("%gM", tonumber(string.format("%.3g", v / 1e6))) end
  if a >= 1e4 then return string.format("%gk", tonumber(string.format("%.3g", v / 1e3))) end
  return string.format("%g", tonumber(string.format("%.4g", v)))
end

function svg.chart(o)
  local W, H = o.width or 560, o.height or 300
  local left, right, top, bottom = 64, 16, 28, 46
  local legend = {}
  local pw, ph = W - left - right, H - top - bottom
  local categories = o.categories
  local xs, ys = {}, {}
  for _, s in ipairs(o.series or {}) do
    for _, p in ipairs(s.points) do
      if not categories then xs[#xs + 1] = p.x end
      ys[#ys + 1] = p.y
      if p.lo then ys[#ys + 1] = p.lo end
      if p.hi then ys[#ys + 1] = p.hi end
    end
  end
  for _, m in ipairs(o.markers or {}) do if not categories then xs[#xs + 1] = m.x end end
  local parts = {}
  local function add(s) parts[#parts + 1] = s end
  add(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" font-family="sans-serif" font-size="11">', W, H, W, H))
  add(string.format('<title>%s</title>', esc(o.title or "chart")))
  add(string.format('<text x="%d" y="16" font-size="13" font-weight="bold">%s</text>', left, esc(o.title or "")))
  if #ys == 0 then
    add(string.format('<text x="%d" y="%d" fill="#777">no data</text></svg>', left + 10, top + ph // 2))
    return table.concat(parts, "\n")
  end
  local ymin, ymax = math.min(table.unpack(ys)), math.max(table.unpack(ys))
  if o.y_from_zero ~= false and ymin > 0 then ymin = 0 end
  local yticks, y0, y1 = svg.ticks(ymin, ymax, 5)
  local function Y(v) return top + ph - (v - y0) / (y1 - y0) * ph end
  local X, xticks
  if categories then
    local n = #categories
    local index = {}
    for i, c in ipairs(categories) do index[c] = i end
    X = function(v) return left + (((index[v] or 1) - 0.5) / n) * pw end
    xticks = categories
  else
    local xmin, xmax = math.min(table.unpack(xs)), math.max(table.unpack(xs))
    local x0, x1
    xticks, x0, x1 = svg.ticks(xmin, xmax, 6)
    X = function(v) return left + (v - x0) / (x1 - x0) * pw end
  end
  -- axes and grid
  add(string.format('<g class="axes" stroke="#ccc" stroke-width="1">'))
  for _, v in ipairs(yticks) do add(string.format('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>', left, left + pw, Y(v), Y(v))) end
  add('</g>')
  add(string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>', left, left + pw, top + ph, top + ph))
  add(string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>', left, left, top, top + ph))
  add('<g class="y-ticks" text-anchor="end">')
  for _, v in ipairs(yticks) do add(string.format('<text x="%d" y="%.1f">%s</text>', left - 5, Y(v) + 4, esc(svg.format(v)))) end
  add('</g><g class="x-ticks" text-anchor="middle">')
  for _, v in ipairs(xticks) do
    add(string.format('<text x="%.1f" y="%d">%s</text>', X(v), top + ph + 15, esc(categories and v or svg.format(v))))
  end
  add('</g>')
  add(string.format('<text class="x-label" x="%d" y="%d" text-anchor="middle">%s</text>', left + pw // 2, H - 8, esc(o.xlabel or "")))
  add(string.format('<text class="y-label" transform="translate(14 %d) rotate(-90)" text-anchor="middle">%s</text>', top + ph // 2, esc(o.ylabel or "")))
  -- markers
  for i, m in ipairs(o.markers or {}) do
    if not categories then
      local x = X(m.x)
      -- labels step down in three rows, so that close markers stay readable
      add(string.format('<g class="marker"><line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#999" stroke-dasharray="4 3"/><text x="%.1f" y="%d" fill="#555" font-size="10">%s</text><title>%s</title></g>',
        x, x, top, top + ph, x + 3, top + 10 + ((i - 1) % 3) * 11, esc(m.label), esc(string.format("%s at %.3f", m.label, m.x))))
    end
  end
  -- series
  for i, s in ipairs(o.series or {}) do
    local color = PALETTE[(i - 1) % #PALETTE + 1]
    add(string.format('<g class="series" data-name="%s">', esc(s.name or ("series " .. i))))
    local band_top, band_bottom = {}, {}
    for _, p in ipairs(s.points) do
      if p.lo and p.hi then
        band_top[#band_top + 1] = string.format("%.1f,%.1f", X(p.x), Y(p.hi))
        table.insert(band_bottom, 1, string.format("%.1f,%.1f", X(p.x), Y(p.lo)))
      end
    end
    if #band_top > 1 then
      add(string.format('<polygon points="%s %s" fill="%s" fill-opacity="0.15" stroke="none"/>', table.concat(band_top, " "), table.concat(band_bottom, " "), color))
    elseif #band_top == 1 then
      local p = s.points[1]
      add(string.format('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-opacity="0.4" stroke-width="6"/>', X(p.x), X(p.x), Y(p.lo), Y(p.hi), color))
    end
    local line = {}
    for _, p in ipairs(s.points) do line[#line + 1] = string.format("%.1f,%.1f", X(p.x), Y(p.y)) end
    if #line > 1 then add(string.format('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>', table.concat(line, " "), color)) end
    if #s.points <= 60 then
      for _, p in ipairs(s.points) do
        add(string.format('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s: %s</title></circle>', X(p.x), Y(p.y), color, esc(s.name or ""), esc(svg.format(p.y))))
      end
    end
    add('</g>')
    legend[#legend + 1] = { name = s.name, color = color }
  end
  if #legend > 1 or (legend[1] and legend[1].name) then
    add('<g class="legend">')
    -- top right, over the plot
    local x = left + pw - 4
    local y = top + 2
    for _, l in ipairs(legend) do
      if l.name then
        add(string.format('<rect x="%d" y="%d" width="10" height="3" fill="%s"/><text x="%d" y="%d" text-anchor="end">%s</text>', x - 10, y + 4, l.color, x - 14, y + 9, esc(l.name)))
        y = y + 13
      end
    end
    add('</g>')
  end
  add('</svg>')
  return table.concat(parts, "\n")
end

return svg
