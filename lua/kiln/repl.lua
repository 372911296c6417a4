-- kiln.repl — the Lua half of the interactive prompt (the C half is lua/main.c):
--
--   repl.setup()             installs the globals the host uses: kiln_repl_print (display of
--                            results), kiln_repl_complete (Tab candidates), and help()
--   repl.format(v [, opts])  the text the prompt shows for a value
--   repl.complete(word [, line_before])   completion candidates for a word
--   repl.help(x)             documentation for a value or a name, from the docs compiled
--                            into the binary (docs/lua-api.md first), else the source comments
--   repl.options             {depth = 3, items = 40, width = 96, edge = 3, threshold = 200}
--
-- Display: tensors show shape, statistics and values summarised NumPy-style (first and last
-- rows and columns); models their config and parameter count; optimizers their
-- hyperparameters and step; schedules and weightings their describe(); tables print nested
-- down to `depth` levels and at most `items` entries each.
local kiln = require "kiln"
local check = require "kiln.check"

local M = {}
M.options = { depth = 3, items = 40, width = 96, edge = 3, threshold = 200 }

local KEYWORDS = {
  "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
  "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}
local KEYWORD = {}
for _, k in ipairs(KEYWORDS) do KEYWORD[k] = true end

local function is_ident(s) return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not KEYWORD[s] end

local function mt_name(v)
  local mt = getmetatable(v)
  if type(mt) == "table" then
    local n = rawget(mt, "__name")
    if type(n) == "string" then return n end
  end
  return nil
end

local function safe(f, ...)
  local r = table.pack(pcall(f, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  return nil
end

-- ---------------------------------------------------------------------------------------
-- Numbers
-- ---------------------------------------------------------------------------------------

-- 1234567 -> "1,234,567"
local function grouped(n)
  local s = tostring(math.tointeger(n) or n)
  local sign, digits = s:match("^(-?)(%d+)$")
  if not digits then return s end
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. digits
end

local function bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  return i == 1 and ("%d B"):format(n) or ("%.1f %s"):format(n, units[i])
end

-- A short number for one-line summaries: 6 significant digits.
local function short(x)
  if math.type(x) == "integer" then return tostring(x) end
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" elseif x == -math.huge then return "-inf" end
  local s = ("%.6g"):format(x)
  return s
end

-- ---------------------------------------------------------------------------------------
-- Tensors: NumPy-style summaries
-- ---------------------------------------------------------------------------------------

-- Which indices of a dimension of size n are shown: all, or the first and last `edge`.
local function shown(n, summarise, edge)
  local idx = {}
  if not summarise or n <= 2 * edge then
    for i = 1, n do idx[#idx + 1] = i end
    return idx, false
  end
  for i = 1, edge do idx[#idx + 1] = i end
  for i = n - edge + 1, n do idx[#idx + 1] = i end
  return idx, true
end

-- One format for every element shown, as NumPy does: fixed point when the magnitudes allow
-- it, else scientific; integers without decimals.
local function number_format(values)
  local maxabs, minabs, all_int, finite = 0, math.huge, true, 0
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      finite = finite + 1
      local a = math.abs(v)
      if a > maxabs then maxabs = a end
      if a > 0 and a < minabs then minabs = a end
      if v ~= math.floor(v) then all_int = false end
    end
  end
  local fmt
  if finite == 0 then
    fmt = "%g"
  elseif all_int and maxabs < 1e7 then
    fmt = "%.0f."
  elseif maxabs >= 1e5 or (minabs < 1e-4 and minabs > 0) then
    fmt = "%.4e"
  else
    fmt = "%.4f"
  end
  return function(v)
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
    return (fmt:format(v):gsub("^%-0%.0+$", "0."))
  end
end

local function tensor_body(t, shape, opts)
  local numel = 1
  for _, n in ipairs(shape) do numel = numel * n end
  local summarise = numel > opts.threshold
  local idx, gap = {}, {}
  for d, n in ipairs(shape) do idx[d], gap[d] = shown(n, summarise, opts.edge) end
  -- Read only the elements shown.
  local values, at = {}, {}
  local function gather(d, prefix)
    if d > #shape then
      local v = t:get(table.unpack(prefix))
      values[#values + 1] = v
      return
    end
    for _, i in ipairs(idx[d]) do
      prefix[d] = i
      gather(d + 1, prefix)
    end
    prefix[d] = nil
  end
  gather(1, at)
  local fmt = number_format(values)
  local texts, width = {}, 0
  for i, v in ipairs(values) do
    texts[i] = fmt(v)
    if #texts[i] > width then width = #texts[i] end
  end
  local k = 0
  local function render(d, indent)
    local parts = {}
    local n = #idx[d]
    for j = 1, n do
      if d == #shape then
        k = k + 1
        parts[#parts + 1] = (" "):rep(width - #texts[k]) .. texts[k]
      else
        parts[#parts + 1] = render(d + 1, indent .. " ")
      end
      if gap[d] and j == opts.edge then parts[#parts + 1] = "..." end
    end
    if d == #shape then return "[" .. table.concat(parts, ", ") .. "]" end
    local sep = ",\n" .. ("\n"):rep(#shape - d - 1) .. indent .. " "
    return "[" .. table.concat(parts, sep) .. "]"
  end
  return render(1, "")
end

local function format_tensor(t, opts)
  local head = tostring(t)
  local ok, shape = pcall(t.size, t)
  if not ok then return head end       -- closed, or its owner was closed
  local numel = t:numel()
  local lines = { head }
  if numel > 0 then
    local st = safe(t.stats, t)
    if st then
      lines[1] = head .. ("  min %s  max %s  mean %s  std %s"):format(short(st.min), short(st.max),
                                                                    short(st.mean), short(st.std))
    end
    local body = safe(tensor_body, t, shape, opts)
    if body then lines[#lines + 1] = body end
  end
  return table.concat(lines, "\n")
end

-- ---------------------------------------------------------------------------------------
-- Models, optimizers, schedules, weightings
-- ---------------------------------------------------------------------------------------

local CONFIG_ORDER = { "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "seed" }

local function format_model(m)
  local ok, cfg = pcall(m.config, m)
  if not ok then return tostring(m) end
  local parts, seen = {}, {}
  for _, k in ipairs(CONFIG_ORDER) do
    if cfg[k] ~= nil then parts[#parts + 1] = k .. "=" .. tostring(cfg[k]); seen[k] = true end
  end
  local rest = {}
  for k in pairs(cfg) do if not seen[k] then rest[#rest + 1] = tostring(k) end end
  table.sort(rest)
  for _, k in ipairs(rest) do parts[#parts + 1] = k .. "=" .. tostring(cfg[k]) end
  local n, n_no_pos = m:num_params()
  local lines = {
    "kiln.Model  " .. table.concat(parts, "  "),
    ("  parameters  %s  (%s without position embeddings)"):format(grouped(n), grouped(n_no_pos)),
  }
  local mem = safe(m.memory_bytes, m)
  if mem then lines[#lines + 1] = "  memory      " .. bytes(mem) .. " (parameters, gradients, activations)" end
  return table.concat(lines, "\n")
end

local HP_ORDER = { "lr", "beta1", "beta2", "eps", "weight_decay", "clip" }

local function format_adamw(o)
  local ok, hp = pcall(o.hparams, o)
  if not ok then return tostring(o) end
  local parts = {}
  for _, k in ipairs(HP_ORDER) do parts[#parts + 1] = k .. "=" .. short(hp[k]) end
  local lines = { ("kiln.AdamW  step %d"):format(o.t), "  " .. table.concat(parts, "  ") }
  local m = safe(o.model, o)
  if m then
    local n = safe(m.num_params, m)
    if n then lines[#lines + 1] = ("  model       %s parameters"):format(grouped(n)) end
  end
  return table.concat(lines, "\n")
end

local function is_schedule(v)
  local s = rawget(kiln, "schedule") or package.loaded["kiln.schedule"]
  return s ~= nil and s.is(v)
end

local function is_weighting(v)
  local w = rawget(kiln, "weighting") or package.loaded["kiln.weighting"]
  return w ~= nil and w.is(v)
end

-- ---------------------------------------------------------------------------------------
-- Values in general; tables nested with limits
-- ---------------------------------------------------------------------------------------

local function quote(s)
  local q = ("%q"):format(s):gsub("\\\n", "\\n"):gsub("\\9", "\\t")
  return q
end

local names_cache   -- value -> qualified name, for functions (built on first use)
local build_names

local format_value

local function key_text(k)
  if is_ident(k) then return k end
  if type(k) == "string" then return "[" .. quote(k) .. "]" end
  return "[" .. format_value(k, { depth = 0, items = 0, width = 1e9, inline = true }, 99, {}) .. "]"
end

local function sorted_keys(t)
  local n = #t
  local keys = {}
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  local rank = { number = 1, string = 2, boolean = 3 }
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return (rank[ta] or 9) < (rank[tb] or 9) end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys, n
end

local function format_table(t, opts, level, seen)
  if seen[t] then return "<cycle: " .. tostring(t) .. ">" end
  if next(t) == nil then return "{}" end
  if level >= opts.depth then
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return ("{...} (%d entr%s)"):format(n, n == 1 and "y" or "ies")
  end
  seen[t] = true
  local keys, n = sorted_keys(t)
  local items, multiline, total = {}, false, 0
  local function add(text)
    items[#items + 1] = text
    total = total + #text + 2
    if text:find("\n", 1, true) then multiline = true end
  end
  local count, limit = 0, opts.items
  for i = 1, n do
    count = count + 1
    if count > limit then break end
    add(format_value(t[i], opts, level + 1, seen))
  end
  for _, k in ipairs(keys) do
    count = count + 1
    if count > limit then break end
    add(key_text(k) .. " = " .. format_value(t[k], opts, level + 1, seen))
  end
  local all = n + #keys
  if all > limit then add(("... (%d more)"):format(all - limit)) end
  seen[t] = nil
  local indent = ("  "):rep(level)
  if not multiline and total + #indent < opts.width then
    return "{" .. table.concat(items, ", ") .. "}"
  end
  local inner = indent .. "  "
  for i, s in ipairs(items) do items[i] = inner .. s:gsub("\n", "\n") end
  return "{\n" .. table.concat(items, ",\n") .. "\n" .. indent .. "}"
end

function format_value(v, opts, level, seen)
  local tv = type(v)
  if tv == "string" then
    if level == 0 then return v end
    if #v > 200 then return quote(v:sub(1, 200)) .. ("... (%d bytes)"):format(#v) end
    return quote(v)
  elseif tv == "number" then
    if math.type(v) == "float" then
      if v ~= v then return "nan" end
      if v == math.floor(v) and math.abs(v) < 1e15 then return ("%.1f"):format(v) end
      return ("%.14g"):format(v)
    end
    return tostring(v)
  elseif tv == "function" then
    local name = (names_cache or build_names())[v]
    if name then return "function " .. name:gsub("^lua:", "") end
    return tostring(v)
  end
  local name = mt_name(v)
  if name == "kiln.Tensor" then
    return level == 0 and format_tensor(v, opts) or tostring(v)
  elseif name == "kiln.Model" then
    return level == 0 and format_model(v) or tostring(v)
  elseif name == "kiln.AdamW" then
    return level == 0 and format_adamw(v) or tostring(v)
  elseif tv == "table" and (is_schedule(v) or is_weighting(v)) then
    local d = safe(v.describe, v) or tostring(v)
    if level > 0 then return d end
    return (is_schedule(v) and "schedule " or "weighting ") .. d
  elseif tv == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, "__tostring") then
      local ok, s = pcall(tostring, v)
      if ok then return s end
    end
    return format_table(v, opts, level, seen)
  end
  local ok, s = pcall(tostring, v)
  return ok and s or ("<" .. tv .. ">")
end

-- The prompt's text for a value.
function M.format(v, opts)
  local o = {}
  for k, x in pairs(M.options) do o[k] = x end
  check.fields("kiln.repl.format", "opts", opts or {}, M.options)
  for k, x in pairs(opts or {}) do o[k] = check.integer("kiln.repl.format", "opts." .. k, x, 0, 1000000) end
  return format_value(v, o, 0, {})
end

-- kiln_repl_print(...): every result; one line when they are all short, else one each.
function M.print(...)
  local n = select("#", ...)
  local texts, oneline, total = {}, true, 0
  for i = 1, n do
    texts[i] = M.format((select(i, ...)))
    total = total + #texts[i] + 1
    if texts[i]:find("\n", 1, true) then oneline = false end
  end
  io.stdout:write(table.concat(texts, (oneline and total < M.options.width) and "\t" or "\n"), "\n")
  io.stdout:flush()
end

-- ---------------------------------------------------------------------------------------
-- Completion
-- ---------------------------------------------------------------------------------------

local embedded   -- package "kiln.embedded_text" (docs, sources, module names), when present

local function embedded_text()
  if embedded == nil then
    local ok, e = pcall(require, "kiln.embedded_text")
    embedded = ok and e or false
  end
  return embedded or nil
end

-- The method table behind a value's metatable: __index when it is a table, else __methods.
local function methods_of(v)
  local mt = getmetatable(v)
  if type(v) == "string" then return string end
  if type(mt) ~= "table" then return nil end
  local idx = rawget(mt, "__index")
  if type(idx) == "table" then return idx end
  local m = rawget(mt, "__methods")
  if type(m) == "table" then return m end
  return nil
end

-- Fields visible through a value: its own keys (tables) and those of its __index chain.
local function fields(v, methods_only)
  local out = {}
  local function take(t)
    for k, x in pairs(t) do
      local callable = type(x) == "function" or (type(x) == "table" and type(getmetatable(x)) == "table"
                                                 and rawget(getmetatable(x), "__call") ~= nil)
      if is_ident(k) and out[k] == nil and (callable or not methods_only) then out[k] = x end
    end
  end
  if type(v) == "table" then take(v) end
  local t, guard = methods_of(v), 0
  while type(t) == "table" and guard < 8 do
    take(t)
    guard = guard + 1
    local up = methods_of(t)
    if up == t then break end
    t = up
  end
  if v == kiln then   -- submodules that have not been loaded yet
    local e = embedded_text()
    for _, name in ipairs(e and e.modules or {}) do
      local short_name = name:match("^kiln%.([%a_][%w_]*)$")
      if short_name and short_name ~= "embedded_text" and out[short_name] == nil then out[short_name] = true end
    end
  end
  return out
end

-- Walk a dotted path ("kiln.schedule") from the globals, triggering lazy loads, never errors.
local function resolve(path)
  local v = _G
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" and type(v) ~= "userdata" then return nil end
    local ok, x = pcall(function() return v[part] end)
    if not ok then return nil end
    v = x
    if v == nil then return nil end
  end
  return v
end

local function suffix_for(x)
  if type(x) == "function" then return "(" end
  local mt = getmetatable(x)
  if type(x) == "table" and type(mt) == "table" and rawget(mt, "__call") and not next(x) then return "(" end
  return ""
end

-- Candidates for `word` (the text before the cursor back to the last separator; '.' and
-- ':' are part of words). Returns a sorted array of full replacements for `word`.
function M.complete(word, line_before)
  check.arg("kiln.repl.complete", "word", word, "?string")
  check.arg("kiln.repl.complete", "line_before", line_before, "?string")
  word = word or ""
  local out = {}
  local prefix, sep, partial = word:match("^(.-)([.:])([%w_]*)$")
  if prefix and prefix ~= "" and prefix:match("^[%a_][%w_]*[%w_.]*$") and not prefix:find("..", 1, true) then
    local v = resolve(prefix)
    if v == nil then return out end
    local cand = fields(v, sep == ":")
    for k, x in pairs(cand) do
      if k:sub(1, #partial) == partial then
        local sfx = x == true and "" or suffix_for(x)
        out[#out + 1] = prefix .. sep .. k .. sfx
      end
    end
  elseif not prefix then
    for k, x in pairs(_G) do
      if is_ident(k) and k:sub(1, #word) == word and not k:match("^kiln_repl_") then
        out[#out + 1] = k .. suffix_for(x)
      end
    end
    for _, k in ipairs(KEYWORDS) do
      if #word > 0 and k:sub(1, #word) == word then out[#out + 1] = k end
    end
  end
  table.sort(out)
  local uniq = {}
  for _, s in ipairs(out) do if uniq[#uniq] ~= s then uniq[#uniq + 1] = s end end
  return uniq
end

-- ---------------------------------------------------------------------------------------
-- Help
-- ---------------------------------------------------------------------------------------

-- Names for values: kiln's functions and modules, and the methods of kiln's classes.
function build_names()
  local names = {}
  local function put(v, name) if names[v] == nil then names[v] = name end end
  local function scan(t, name)
    put(t, name)
    for k, x in pairs(t) do
      if is_ident(k) and (type(x) == "function" or (type(x) == "table" and getmetatable(x) and rawget(getmetatable(x), "__call"))) then
        put(x, name .. "." .. k)
      end
    end
  end
  for k, x in pairs(kiln) do
    if is_ident(k) and type(x) == "function" then put(x, "kiln." .. k) end
  end
  local e = embedded_text()
  local mods = {}
  for _, n in ipairs(e and e.modules or {}) do mods[#mods + 1] = n end
  for n in pairs(package.loaded) do if type(n) == "string" and n:match("^kiln%.") then mods[#mods + 1] = n end end
  table.sort(mods)
  for _, n in ipairs(mods) do
    local short_name = n:match("^kiln%.([%a_][%w_]*)$")
    if short_name and short_name ~= "embedded_text" and short_name ~= "core" then
      local ok, mod = pcall(function() return kiln[short_name] end)
      if ok and type(mod) == "table" then scan(mod, n) end
    end
  end
  for name, mt in pairs(debug.getregistry()) do
    if type(name) == "string" and name:match("^kiln%.%u") and type(mt) == "table" then
      put(mt, name)
      local methods = rawget(mt, "__methods") or rawget(mt, "__index")
      if type(methods) == "table" then
        for k, f in pairs(methods) do
          if type(f) == "function" then put(f, name .. ":" .. k) end
        end
      end
    end
  end
  -- Lua's own functions, to point at the manual
  for _, lib in ipairs({ "_G", "string", "table", "math", "io", "os", "coroutine", "utf8", "debug", "package" }) do
    local t = lib == "_G" and _G or rawget(_G, lib)
    if type(t) == "table" then
      for k, f in pairs(t) do
        if type(f) == "function" and is_ident(k) then put(f, "lua:" .. (lib == "_G" and "" or lib .. ".") .. k) end
      end
    end
  end
  names_cache = names
  return names
end

local function docs()
  local e = embedded_text()
  local list = {}
  if e and e.docs then
    for name, text in pairs(e.docs) do list[#list + 1] = { name = name, text = text } end
  end
  table.sort(list, function(a, b)   -- the API reference first
    if (a.name == "lua-api.md") ~= (b.name == "lua-api.md") then return a.name == "lua-api.md" end
    return a.name < b.name
  end)
  return list
end

-- Split a markdown file into sections: {level, title, lines, chain = titles of parents}.
local parsed = {}
local function sections(doc)
  if parsed[doc.name] then return parsed[doc.name] end
  local out, stack, cur, in_code = {}, {}, nil, false
  cur = { level = 0, title = doc.name, lines = {}, chain = doc.name, doc = doc.name }
  out[1] = cur
  for line in (doc.text .. "\n"):gmatch("(.-)\n") do
    if line:match("^```") then in_code = not in_code end
    local hashes, title = line:match("^(#+)%s+(.*)$")
    if hashes and not in_code then
      local level = #hashes
      while #stack > 0 and stack[#stack].level >= level do stack[#stack] = nil end
      local chain = {}
      for _, s in ipairs(stack) do chain[#chain + 1] = s.title end
      chain[#chain + 1] = title
      cur = { level = level, title = title, lines = { line }, chain = table.concat(chain, " / "), doc = doc.name }
      stack[#stack + 1] = cur
      out[#out + 1] = cur
    else
      cur.lines[#cur.lines + 1] = line
    end
  end
  parsed[doc.name] = out
  return out
end

-- The section text under a heading, subsections included.
local function section_text(secs, i)
  local s = secs[i]
  local lines = {}
  for j = i, #secs do
    if j > i and secs[j].level <= s.level then break end
    for _, l in ipairs(secs[j].lines) do lines[#lines + 1] = l end
  end
  while #lines > 0 and lines[#lines]:match("^%s*$") do lines[#lines] = nil end
  return table.concat(lines, "\n")
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- name ("kiln.model", "kiln.Model:forward", "kiln.schedule.cosine"): its documentation.
local function lookup_docs(name)
  local pat = escape(name) .. "%f[^%w_]"
  -- 1. a heading naming it
  for _, doc in ipairs(docs()) do
    local secs = sections(doc)
    for i, s in ipairs(secs) do
      if s.level > 0 and (" " .. s.title .. " "):find("[^%w_.]" .. pat) then
        return section_text(secs, i), doc.name
      end
    end
  end
  -- 2. a table row for it, in a section about its owner
  local owner, sep, member = name:match("^(.-)([.:])([%a_][%w_]*)$")
  if not owner or owner == "" then return nil end
  local owner_word = owner:match("([%a_][%w_]*)$"):lower()
  if owner_word == "kiln" then return nil end
  local row_pat = "^|%s*`[%w_]*[.:]?" .. escape(member) .. "%f[^%w_]"
  for _, doc in ipairs(docs()) do
    for _, s in ipairs(sections(doc)) do
      if s.chain:lower():find(owner_word, 1, true) then
        local header
        for _, l in ipairs(s.lines) do
          if l:match("^|") and not header then header = l end
          if l:match(row_pat) or l:match("^|%s*`[^|]*[/ ]%s*`[%w_]*[.:]?" .. escape(member) .. "%f[^%w_]") then
            return s.lines[1] .. "\n\n" .. header .. "\n| --- |\n" .. l, doc.name
          end
        end
      end
    end
  end
  return nil
end

-- The comment block just above line `linedefined` of a source text (or the file's header).
local function source_comment(text, linedefined)
  local lines = {}
  for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  local out = {}
  if linedefined and linedefined > 0 then
    local i = linedefined - 1
    while i >= 1 and lines[i]:match("^%s*%-%-") do table.insert(out, 1, lines[i]); i = i - 1 end
    table.insert(out, lines[linedefined])
  else
    for _, l in ipairs(lines) do
      if not l:match("^%s*%-%-") then break end
      out[#out + 1] = l
    end
  end
  return table.concat(out, "\n")
end

local function source_of(f)
  local info = debug.getinfo(f, "S")
  if not info or info.what ~= "Lua" then return nil end
  local src = info.source or ""
  if src:sub(1, 1) ~= "@" then return nil end
  local path = src:sub(2)
  local e = embedded_text()
  local text = e and e.sources and e.sources[path]
  if not text then
    local fh = io.open(path, "rb")
    if fh then text = fh:read("a"); fh:close() end
  end
  if not text then return nil end
  return text, info.linedefined, path
end

local function wrap(text, indent, width)
  local lines, cur = {}, indent
  for word in text:gmatch("%S+") do
    if #cur > #indent and #cur + 1 + #word > width then
      lines[#lines + 1] = cur
      cur = indent .. word
    else
      cur = (#cur > #indent and cur .. " " or cur) .. word
    end
  end
  if #cur > #indent then lines[#lines + 1] = cur end
  return table.concat(lines, "\n")
end

-- Markdown to terminal text: backticks and emphasis dropped, table rows become
-- "call" lines with the description wrapped and indented below.
local function render(md)
  local out = {}
  local in_code, header_next = false, true
  for line in (md .. "\n"):gmatch("(.-)\n") do
    if line:match("^```") then
      in_code = not in_code
    elseif in_code then
      out[#out + 1] = "    " .. line
    elseif line:match("^|%s*:?%-%-%-") then
      header_next = false          -- the rule under a table's header row
    elseif line:match("^|") then
      local cells = {}
      local protected = line:gsub("\\|", "\0")
      for c in protected:gmatch("|([^|]*)") do
        cells[#cells + 1] = c:gsub("%z", "|"):gsub("`", ""):match("^%s*(.-)%s*$")
      end
      if cells[#cells] == "" then cells[#cells] = nil end
      if header_next then
        -- a header row: skipped (the rule line follows)
      else
        local first = table.remove(cells, 1) or ""
        out[#out + 1] = "  " .. first
        local desc = table.concat(cells, " | "):gsub("%*%*", "")
        if desc ~= "" then out[#out + 1] = wrap(desc, "      ", M.options.width) end
      end
    else
      header_next = true
      out[#out + 1] = (line:gsub("`", ""):gsub("%*%*", ""):gsub("^(#+)%s+", ""))
    end
  end
  return table.concat(out, "\n")
end

local GENERAL = [[
kiln interactive prompt
  expressions print their value (=expr and return expr work too); statements run;
  an unfinished statement continues on the next line (prompt ">>")
  help(x)  or  ?name     documentation: help(kiln.train), ?kiln.model, ?m:forward
  Tab                    complete globals, table fields (kiln.sch<Tab>), methods (m:for<Tab>)
  Ctrl-C                 interrupt a running call (the model stays usable) / clear the line
  Ctrl-D                 leave (history is kept in ~/.kiln_history)
  kiln.repl.options      display limits: depth, items, width, edge, threshold
Modules: kiln.schedule, kiln.weighting, kiln.train, kiln.suite, kiln.config, kiln.util,
kiln.yaml; classes: kiln.Tensor, kiln.Model, kiln.AdamW, kiln.Batch, kiln.Dataset, kiln.Rng.]]

-- What help(x) explains: a name, or nil and a reason.
local function name_for(x)
  local names = build_names()
  if type(x) == "string" then
    local s = x:match("^%s*(.-)%s*$")
    if s == "" then return nil end
    local v = resolve(s)
    if v ~= nil and type(v) ~= "string" and names[v] then return names[v], v end
    -- "m:forward": the class of m, then the method
    local obj, meth = s:match("^([%a_][%w_.]*):([%a_][%w_]*)$")
    if obj then
      local o = resolve(obj)
      local cls = o ~= nil and (mt_name(o) or names[o])
      if cls then return cls .. ":" .. meth end
    end
    if v ~= nil and type(v) ~= "string" then return name_for(v) end
    return s
  end
  if names[x] then return names[x], x end
  local cls = mt_name(x)
  if cls then return cls, x end
  return nil
end

function M.help_text(x)
  if x == nil then return GENERAL end
  if type(x) == "table" and (is_schedule(x) or is_weighting(x)) then
    local kind = is_schedule(x) and "schedule" or "weighting"
    local text = kind .. " " .. (safe(x.describe, x) or "?")
    for _, doc in ipairs(docs()) do
      local secs = sections(doc)
      for i, s in ipairs(secs) do
        if s.title == "Methods and helpers" and s.chain:lower():find(kind, 1, true) then
          return text .. "\n\n" .. render(section_text(secs, i)) .. "\n\n(docs/" .. doc.name .. ")"
        end
      end
    end
    return text
  end
  local name, value = name_for(x)
  if type(x) == "string" and x:match("^%s*$") then return GENERAL end
  if not name then
    return ("no documentation for this %s (help() lists what is documented)"):format(type(x))
  end
  local md, doc = lookup_docs(name)
  if not md and type(x) == "string" and not name:match("^kiln[.:]") then
    md, doc = lookup_docs("kiln." .. name)
  end
  if md then return render(md) .. "\n\n(" .. "docs/" .. doc .. ")" end
  if name:match("^lua:") then
    local n = name:sub(5)
    return ("%s is part of Lua's standard library: https://www.lua.org/manual/5.4/manual.html#pdf-%s"):format(n, n)
  end
  -- Not in the docs: the comments in the Lua source.
  local f = value
  if type(f) == "table" then
    local mt = getmetatable(f)
    local call = type(mt) == "table" and rawget(mt, "__call")
    -- a module: its header comment, then what it exports
    local src_text, _, path
    local run = rawget(f, "run")
    for _, v in pairs(f) do
      if type(v) == "function" then src_text, _, path = source_of(v); if src_text then break end end
    end
    local parts = {}
    if src_text then parts[#parts + 1] = source_comment(src_text, nil) end
    local keys = {}
    for k, v in pairs(f) do if is_ident(k) and type(v) == "function" then keys[#keys + 1] = k end end
    table.sort(keys)
    if #keys > 0 then parts[#parts + 1] = name .. ": " .. table.concat(keys, ", ") end
    if call and run then parts[#parts + 1] = name .. "{...} is " .. name .. ".run{...}" end
    if path then parts[#parts + 1] = "(source comments: " .. path:gsub("^%[kiln%]/", "") .. ")" end
    if #parts > 0 then return table.concat(parts, "\n\n") end
  elseif type(f) == "function" then
    local src_text, line, path = source_of(f)
    if src_text then
      return source_comment(src_text, line) .. "\n\n(source comments: " .. path:gsub("^%[kiln%]/", "") .. ":" .. line .. ")"
    end
  end
  -- A word: any section or row that mentions it.
  if type(x) == "string" then
    local hits = {}
    local pat = "%f[%w_]" .. escape(x:match("^%s*(.-)%s*$")) .. "%f[^%w_]"
    for _, doc in ipairs(docs()) do
      for _, s in ipairs(sections(doc)) do
        if s.level > 0 and (s.title:find(pat) or table.concat(s.lines, "\n"):find(pat)) then
          hits[#hits + 1] = "  " .. s.chain .. "  (docs/" .. doc.name .. ")"
        end
      end
    end
    if #hits > 0 then
      return ("no entry named %s; sections that mention it:\n%s"):format(x, table.concat(hits, "\n", 1, math.min(#hits, 15)))
    end
  end
  return "no documentation found for " .. name
end

function M.help(x)
  io.stdout:write(M.help_text(x), "\n")
  io.stdout:flush()
end

-- Install the prompt's globals. Called by the host before the first prompt.
function M.setup()
  _G.kiln_repl_print = M.print
  _G.kiln_repl_complete = function(word, line) return M.complete(word, line) end
  if rawget(_G, "help") == nil then _G.help = M.help end
  build_names()
end

return M
