-- moonbox.experiment.report: an experiment's outputs from its records. results.csv (one row a
-- trial), series/TRIAL.csv (a trial's samples and markers) and report.html: one self-contained
-- page, no script and nothing fetched, with SVG plots of each recorded value against each
-- parameter (mean, with a min-max band over the other runs), each sampled metric over time per
-- trial with its faults marked, and a table of the trials.
local svg = require "moonbox.experiment.svg"

local report = {}

local esc = svg.escape

-- MARK: CSV (RFC 4180)

local function csv_field(v)
  if v == nil then return "" end
  local s = math.type(v) == "float" and string.format("%.15g", v) or tostring(v)
  if s:find('[,"\r\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

function report.csv_line(fields)
  local out = {}
  for i = 1, fields.n or #fields do out[i] = csv_field(fields[i]) end
  return table.concat(out, ",") .. "\n"
end

--- Parses CSV text into a header and rows (tables keyed by the header's names; numbers as numbers).
function report.parse_csv(text)
  local rows, header = {}, nil
  local i, n = 1, #text
  local record, field = {}, {}
  local function end_field()
    record[#record + 1] = table.concat(field)
    field = {}
  end
  local function end_record()
    end_field()
    if not header then
      header = record
    elseif #record > 1 or record[1] ~= "" then
      local row = {}
      for k, name in ipairs(header) do
        local v = record[k]
        if v ~= nil and v ~= "" then row[name] = tonumber(v) or v end
      end
      rows[#rows + 1] = row
    end
    record = {}
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' then
      local j = i + 1
      while true do
        local q = text:find('"', j, true)
        if not q then field[#field + 1] = text:sub(j) i = n + 1 break end
        field[#field + 1] = text:sub(j, q - 1)
        if text:sub(q + 1, q + 1) == '"' then
          field[#field + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
    elseif c == "," then
      end_field()
      i = i + 1
    elseif c == "\n" or c == "\r" then
      end_record()
      if c == "\r" and text:sub(i + 1, i + 1) == "\n" then i = i + 1 end
      i = i + 1
    else
      local j = text:find('[,\r\n"]', i) or n + 1
      field[#field + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  if #field > 0 or #record > 0 then end_record() end
  return header or {}, rows
end

-- MARK: series

report.SERIES_COLUMNS = { "t", "container", "cpu_seconds", "cpu_cores", "memory_bytes", "pids", "io_read_bytes", "io_write_bytes",
  "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "event" }

--- A trial's series as CSV text: its samples, then its markers (rows with only t and event).
function report.series_csv(rows, events)
  local out = { report.csv_line(report.SERIES_COLUMNS) }
  local all = {}
  for _, r in ipairs(rows) do all[#all + 1] = r end
  for _, e in ipairs(events) do all[#all + 1] = { t = e.t, event = e.label } end
  table.sort(all, function(a, b) return a.t < b.t end)
  for _, r in ipairs(all) do
    local f = {}
    for i, name in ipairs(report.SERIES_COLUMNS) do f[i] = r[name] end
    f.n = #report.SERIES_COLUMNS
    out[#out + 1] = report.csv_line(f)
  end
  return table.concat(out)
end

-- MARK: results.csv

local function sorted_keys(records, field)
  local seen, list = {}, {}
  for _, r in ipairs(records) do
    for k in pairs(r[field] or {}) do
      if not seen[k] then seen[k] = true list[#list + 1] = k end
    end
  end
  table.sort(list)
  return list
end

--- results.csv: trial, label, status, duration, the parameters, the values, error.
function report.results_csv(records, param_names)
  local values = sorted_keys(records, "values")
  local header = { "trial", "label", "status", "duration" }
  for _, p in ipairs(param_names) do header[#header + 1] = p end
  local is_param = { trial = true, label = true, status = true, duration = true, error = true }
  for _, p in ipairs(param_names) do is_param[p] = true end
  -- a value named like a parameter or a column of the trial's gets a column of its own
  for _, v in ipairs(values) do header[#header + 1] = is_param[v] and (v .. "_value") or v end
  header[#header + 1] = "error"
  local out = { report.csv_line(header) }
  for _, r in ipairs(records) do
    local f = { r.trial, r.label, r.status, r.duration }
    for _, p in ipairs(param_names) do f[#f + 1] = r.params[p] end
    for _, v in ipairs(values) do f[#f + 1] = r.values and r.values[v] end
    f[#f + 1] = r.error
    f.n = #header
    out[#out + 1] = report.csv_line(f)
  end
  return table.concat(out)
end

-- MARK: the page

local function mean_min_max(list)
  local sum, lo, hi = 0, math.huge, -math.huge
  for _, v in ipairs(list) do sum = sum + v lo = math.min(lo, v) hi = math.max(hi, v) end
  return sum / #list, lo, hi
end

local function key_of(v) return type(v) == "number" and string.format("%.12g", v) or tostring(v) end

-- One chart: `value` against parameter `x`; a line for each combination of the other swept
-- parameters (repetitions are averaged), or one line when there would be too many.
local function value_chart(records, params, x, value)
  local numeric = true
  for _, v in ipairs(params[x].values) do if type(v) ~= "number" then numeric = false end end
  local others = {}
  for _, p in ipairs(params.order) do
    if p ~= x and #params[p].values > 1 and not params[p].repeats then others[#others + 1] = p end
  end
  local groups, order = {}, {}
  for _, r in ipairs(records) do
    local y = r.status == "ok" and r.values and r.values[value]
    if type(y) == "number" then
      local parts = {}
      for _, p in ipairs(others) do parts[#parts + 1] = p .. "=" .. key_of(r.params[p]) end
      local g = table.concat(parts, " ")
      if not groups[g] then groups[g] = {} order[#order + 1] = g end
      local xv = key_of(r.params[x])
      groups[g][xv] = groups[g][xv] or { x = r.params[x], ys = {} }
      table.insert(groups[g][xv].ys, y)
    end
  end
  if #order > 8 then
    -- too many lines to read: one, over everything
    local merged = {}
    for _, g in ipairs(order) do
      for xv, cell in pairs(groups[g]) do
        merged[xv] = merged[xv] or { x = cell.x, ys = {} }
        for _, y in ipairs(cell.ys) do table.insert(merged[xv].ys, y) end
      end
    end
    groups, order = { [""] = merged }, { "" }
  end
  local series = {}
  for _, g in ipairs(order) do
    local points = {}
    for _, xval in ipairs(params[x].values) do
      local cell = groups[g][key_of(xval)]
      if cell then
        local m, lo, hi = mean_min_max(cell.ys)
        points[#points + 1] = { x = numeric and xval or key_of(xval), y = m, lo = #cell.ys > 1 and lo or nil, hi = #cell.ys > 1 and hi or nil }
      end
    end
    series[#series + 1] = { name = g ~= "" and g or nil, points = points }
  end
  local categories
  if not numeric then
    categories = {}
    for _, v in ipairs(params[x].values) do categories[#categories + 1] = key_of(v) end
  end
  return svg.chart({ title = value .. " by " .. x, xlabel = x, ylabel = value, series = series, categories = categories })
end

local METRICS = {
  { "cpu_cores", "CPU (cores)" }, { "memory_bytes", "memory (bytes)" }, { "pids", "processes" },
  { "rx_rate", "received (bytes/s)" }, { "tx_rate", "sent (bytes/s)" }, { "io_rate", "disk I/O (bytes/s)" },
}

-- Rates from counters, per container.
local function add_rates(rows)
  local last = {}
  for _, r in ipairs(rows) do
    local l = last[r.container]
    if l and r.t > l.t then
      local dt = r.t - l.t
      if r.rx_bytes and l.rx_bytes then r.rx_rate = math.max(0, (r.rx_bytes - l.rx_bytes) / dt) end
      if r.tx_bytes and l.tx_bytes then r.tx_rate = math.max(0, (r.tx_bytes - l.tx_bytes) / dt) end
      if r.io_read_bytes and l.io_read_bytes then
        r.io_rate = math.max(0, ((r.io_read_bytes + (r.io_write_bytes or 0)) - (l.io_read_bytes + (l.io_write_bytes or 0))) / dt)
      end
    end
    last[r.container] = r
  end
end

local function series_charts(rows, markers)
  add_rates(rows)
  local out = {}
  for _, m in ipairs(METRICS) do
    local by, order = {}, {}
    for _, r in ipairs(rows) do
      if r.container and type(r[m[1]]) == "number" then
        if not by[r.container] then by[r.container] = {} order[#order + 1] = r.container end
        table.insert(by[r.container], { x = r.t, y = r[m[1]] })
      end
    end
    if #order > 0 then
      local series = {}
      for _, c in ipairs(order) do series[#series + 1] = { name = c, points = by[c] } end
      out[#out + 1] = svg.chart({ title = m[2], xlabel = "seconds", ylabel = m[2], series = series, markers = markers, width = 420, height = 220 })
    end
  end
  return out
end

local STYLE = [[
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
.error { color: #b00; }
.charts svg { margin: 4px; border: 1px solid #eee; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.meta dt { font-weight: bold; }
]]

--- The page, as text. e = {name=, params = {order = {...}, name = {values=, repeats=}}},
-- meta, records (in trial order), series = {label -> {rows, markers}}.
function report.html(o)
  local parts = {}
  local function add(s) parts[#parts + 1] = s end
  local records, params, meta = o.records, o.params, o.meta or {}
  local ok, failed = 0, 0
  for _, r in ipairs(records) do if r.status == "ok" then ok = ok + 1 else failed = failed + 1 end end
  add('<!DOCTYPE html>')
  add('<html lang="en"><head><meta charset="utf-8">')
  add('<title>' .. esc(o.name) .. ' — moonbox experiment</title>')
  add('<style>' .. STYLE .. '</style></head><body>')
  add('<h1>' .. esc(o.name) .. '</h1>')
  add('<dl class="meta">')
  local meta_rows = { { "trials", string.format("%d (%d ok, %d failed)", #records, ok, failed) } }
  for _, k in ipairs({ "started", "moonbox", "kernel", "cpus", "cgroup", "seed", "file" }) do
    if meta[k] ~= nil then meta_rows[#meta_rows + 1] = { k, tostring(meta[k]) } end
  end
  for _, m in ipairs(meta_rows) do add('<dt>' .. esc(m[1]) .. '</dt><dd>' .. esc(m[2]) .. '</dd>') end
  add('</dl>')
  -- values against parameters
  local values = {}
  for _, v in ipairs(sorted_keys(records, "values")) do
    for _, r in ipairs(records) do
      if r.values and type(r.values[v]) == "number" then values[#values + 1] = v break end
    end
  end
  local swept = {}
  for _, p in ipairs(params.order) do if #params[p].values > 1 and not params[p].repeats then swept[#swept + 1] = p end end
  if #values > 0 and #swept > 0 then
    add('<h2>Results by parameter</h2>')
    add('<p>Each point is the mean over the trials with that value; the band spans their minimum and maximum.</p>')
    for _, v in ipairs(values) do
      add('<div class="charts">')
      for _, p in ipairs(swept) do add(value_chart(records, params, p, v)) end
      add('</div>')
    end
  end
  -- series
  local any_series = false
  for _, r in ipairs(records) do if o.series[r.label] and #o.series[r.label].rows > 0 then any_series = true end end
  if any_series then
    add('<h2>Metrics over time</h2>')
    add('<p>Dashed lines mark the faults and events of each trial.</p>')
    for _, r in ipairs(records) do
      local s = o.series[r.label]
      if s and #s.rows > 0 then
        add('<details' .. (r.trial == records[1].trial and ' open' or '') .. '><summary>' .. esc(r.label) .. ' (' .. esc(r.status) .. ')</summary><div class="charts">')
        for _, chart in ipairs(series_charts(s.rows, s.markers)) do add(chart) end
        add('</div></details>')
      end
    end
  end
  -- table
  add('<h2>Trials</h2>')
  local value_names = sorted_keys(records, "values")
  add('<table><thead><tr><th>#</th>')
  for _, p in ipairs(params.order) do add('<th>' .. esc(p) .. '</th>') end
  add('<th>status</th><th>seconds</th>')
  for _, v in ipairs(value_names) do add('<th>' .. esc(v) .. '</th>') end
  add('<th>events</th><th>error</th></tr></thead><tbody>')
  for _, r in ipairs(records) do
    add('<tr><td>' .. esc(r.trial) .. '</td>')
    for _, p in ipairs(params.order) do add('<td>' .. esc(key_of(r.params[p])) .. '</td>') end
    add('<td' .. (r.status ~= "ok" and ' class="error"' or '') .. '>' .. esc(r.status) .. '</td>')
    add('<td>' .. esc(r.duration and string.format("%.2f", r.duration) or "") .. '</td>')
    for _, v in ipairs(value_names) do
      local x = r.values and r.values[v]
      add('<td>' .. esc(x == nil and "" or type(x) == "number" and svg.format(x) or tostring(x)) .. '</td>')
    end
    local ev = {}
    for _, e in ipairs(r.events or {}) do ev[#ev + 1] = string.format("%.3f s %s", e.t, e.label) end
    add('<td>' .. esc(table.concat(ev, "; ")) .. '</td>')
    add('<td class="error">' .. esc(r.error or "") .. '</td></tr>')
  end
  add('</tbody></table>')
  add('<p><small>Made by moonbox; the data: results.jsonl, results.csv, series/.</small></p>')
  add('</body></html>')
  return table.concat(parts, "\n") .. "\n"
end

return report
