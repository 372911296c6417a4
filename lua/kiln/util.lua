-- kiln.util — small helpers the library shares: files and directories, atomic text writes,
-- CSV, number formatting that reads back exactly, and checking tables of named arguments.
local M = {}
local check = require "kiln.check"
local lfs = require "lfs"
local core = require "kiln.core"

-- Quote a string for /bin/sh.
function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.exists(path)
  check.string("kiln.util.exists", "path", path)
  return lfs.attributes(path, "mode") ~= nil
end

function M.is_dir(path)
  check.string("kiln.util.is_dir", "path", path)
  return lfs.attributes(path, "mode") == "directory"
end

-- Create a directory and its missing parents (like mkdir -p).
function M.mkdir(path)
  check.string("kiln.util.mkdir", "path", path, true)
  if M.is_dir(path) then return end
  local sofar = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    sofar = sofar .. part
    if not M.is_dir(sofar) then
      local ok, err = lfs.mkdir(sofar)
      -- Another process may create it between the test and the call: that is success.
      if not ok and not M.is_dir(sofar) then
        error(("kiln.util.mkdir: cannot create directory '%s': %s"):format(sofar, tostring(err)), 0)
      end
    end
    sofar = sofar .. "/"
  end
end

function M.read_file(path)
  check.string("kiln.util.read_file", "path", path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s, rerr = f:read("a")
  f:close()
  if not s then return nil, rerr end
  return s
end

-- Replace a file's content in one step through the core's atomic writer (temporary file,
-- fsync, rename, directory fsync): a crash or a full disk never leaves a half-written file
-- under the real name.
function M.write_atomic(path, text)
  check.string("kiln.util.write_atomic", "path", path, true)
  check.string("kiln.util.write_atomic", "text", text)
  local ok, err = pcall(core.write_atomic, path, text)
  if not ok then error("kiln.util.write_atomic: " .. tostring(err), 0) end
end

-- Names in a directory matching a Lua pattern, sorted ({} when the directory is absent).
function M.list_dir(dir, pattern)
  check.string("kiln.util.list_dir", "dir", dir)
  check.arg("kiln.util.list_dir", "pattern", pattern, "?string")
  local out = {}
  if not M.is_dir(dir) then return out end
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." and (not pattern or name:match(pattern)) then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

-- Write text to an open file handle and check every result: a full disk or a closed pipe
-- is an error naming the file, never a silently short file.
function M.checked_write(f, path, text)
  check.arg("kiln.util.checked_write", "f", f, "userdata")
  check.string("kiln.util.checked_write", "path", path)
  check.string("kiln.util.checked_write", "text", text)
  if io.type(f) ~= "file" then check.fail("kiln.util.checked_write", "f", "an open file", f) end
  local ok, err = f:write(text)
  if not ok then error(("cannot write '%s': %s"):format(path, tostring(err)), 0) end
  ok, err = f:flush()
  if not ok then error(("cannot write '%s': %s"):format(path, tostring(err)), 0) end
end

-- The float32 nearest to x (the precision the core computes in).
function M.f32(x)
  check.arg("kiln.util.f32", "x", x, "number")
  return (string.unpack("f", string.pack("f", x)))
end

-- Shortest decimal text that reads back as the same float32: the value the core used, written
-- as a person would (0.9, not 0.8999999761581421).
function M.num32(x)
  if type(x) ~= "number" or math.type(x) == "integer" or x ~= x or math.abs(x) > 3.4028234663852886e38 then
    return M.num(x)
  end
  local f = M.f32(x)
  for p = 1, 9 do
    local s = ("%." .. p .. "g"):format(f)
    if M.f32(tonumber(s)) == f then return M.num(tonumber(s)) end
  end
  return M.num(f)
end

-- Shortest decimal text that reads back as the same number.
function M.num(x)
  if type(x) ~= "number" then return tostring(x) end
  if math.type(x) == "integer" then return tostring(x) end
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" elseif x == -math.huge then return "-inf" end
  if x == math.floor(x) and math.abs(x) < 2^53 then return ("%d"):format(x) end
  for p = 1, 17 do
    local s = ("%." .. p .. "g"):format(x)
    if tonumber(s) == x then return s end
  end
  return ("%.17g"):format(x)
end

-- A value as an error message shows it: strings quoted, numbers exactly.
function M.show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "number" then return M.num(v) end
  return type(v) == "table" and "a table" or tostring(v)
end

-- Raises "who: <message>" (no position: the message says where).
function M.fail(who, fmtstr, ...)
  check.string("kiln.util.fail", "who", who)
  check.string("kiln.util.fail", "fmtstr", fmtstr)
  local ok, msg = pcall(string.format, fmtstr, ...)
  if not ok then check.error("kiln.util.fail", "the format %q does not fit its arguments", fmtstr) end
  error(who .. ": " .. msg, 0)
end

-- The named-argument table of a constructor like schedule.cosine{...} checked against spec, a
-- list of {name, kind, default, required = bool}: returns a new table with every field, the
-- defaults filled in. args may be nil (all defaults). Raises (naming `who`) on a non-table, a
-- table with metatable opts.mt (a constructed value passed where its arguments belong), an
-- unknown field, or a missing required one. convert(who, name, kind, v) checks one given value
-- and returns it (possibly converted). opts.positional: the field a lone number (or {number})
-- fills; opts.expect: kind -> text, added to the "is required" message.
function M.parse_fields(who, args, spec, convert, opts)
  check.string("kiln.util.parse_fields", "who", who)
  check.list("kiln.util.parse_fields", "spec", spec, "table")
  check.arg("kiln.util.parse_fields", "convert", convert, "callable")
  check.arg("kiln.util.parse_fields", "opts", opts, "table")
  local positional = opts.positional
  if args == nil then args = {} end
  if type(args) == "number" and positional then args = { args } end
  if type(args) ~= "table" or (opts.mt and getmetatable(args) == opts.mt) then
    M.fail(who, "expected a table of named fields, e.g. %s{...} (got %s)", who, M.show(args))
  end
  local known, names = {}, {}
  for _, f in ipairs(spec) do known[f[1]] = f; names[#names + 1] = f[1] end
  local out = {}
  for k, v in pairs(args) do
    if k == 1 and positional and #args == 1 then
      k = positional
      if args[positional] ~= nil then M.fail(who, "'%s' given twice (positionally and by name)", k) end
    elseif not known[k] then
      M.fail(who, "unknown field '%s' (fields: %s)", tostring(k), table.concat(names, ", "))
    end
    out[k] = convert(who, k, known[k][2], v)
  end
  for _, f in ipairs(spec) do
    local name, kind, default = f[1], f[2], f[3]
    if out[name] == nil then
      if f.required then
        if opts.expect then M.fail(who, "'%s' is required (%s)", name, opts.expect[kind]) end
        M.fail(who, "'%s' is required", name)
      end
      out[name] = default
    end
  end
  return out
end

-- A CSV field: numbers exactly, strings quoted when they need it, nil empty.
function M.csv_field(v)
  if v == nil then return "" end
  if type(v) == "number" then return M.num(v) end
  local s = tostring(v)
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

-- At most check.MAX_POSITIONS + 64 fields (a positions.csv row of the longest context).
function M.csv_line(fields, n)
  check.arg("kiln.util.csv_line", "fields", fields, "table")
  if n ~= nil then n = check.integer("kiln.util.csv_line", "n", n, 0, check.MAX_POSITIONS + 64) end
  local out = {}
  for i = 1, n or #fields do out[i] = M.csv_field(fields[i]) end
  return table.concat(out, ",") .. "\n"
end

-- Parse a CSV file into {header = {...}, rows = {{...}, ...}} (numbers converted).
function M.read_csv(path)
  check.string("kiln.util.read_csv", "path", path)
  local text, err = M.read_file(path)
  if not text then return nil, err end
  local rows, header = {}, nil
  for line in text:gmatch("[^\n]+") do
    local fields, i = {}, 1
    while i <= #line + 1 do
      local c = line:sub(i, i)
      if c == '"' then
        local j, buf = i + 1, {}
        while true do
          local q = line:find('"', j, true)
          if not q then error(("kiln.util.read_csv: %s: unterminated quote"):format(path), 0) end
          buf[#buf + 1] = line:sub(j, q - 1)
          if line:sub(q + 1, q + 1) == '"' then buf[#buf + 1] = '"'; j = q + 2 else i = q + 2; break end
        end
        fields[#fields + 1] = table.concat(buf)
      else
        local comma = line:find(",", i, true) or (#line + 1)
        local raw = line:sub(i, comma - 1)
        fields[#fields + 1] = raw == "" and "" or (tonumber(raw) or raw)
        i = comma + 1
      end
    end
    if not header then header = fields else rows[#rows + 1] = fields end
  end
  return { header = header or {}, rows = rows }
end

-- Median of a list of numbers (nil for an empty list).
function M.median(xs)
  check.numbers("kiln.util.median", "xs", xs)
  if #xs == 0 then return nil end
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return 0.5 * (s[n // 2] + s[n // 2 + 1])
end

function M.mean_std(xs)
  check.numbers("kiln.util.mean_std", "xs", xs)
  local n = #xs
  if n == 0 then return nil, nil end
  local s = 0
  for _, x in ipairs(xs) do s = s + x end
  local mean = s / n
  if n == 1 then return mean, 0 end
  local v = 0
  for _, x in ipairs(xs) do v = v + (x - mean) ^ 2 end
  return mean, math.sqrt(v / (n - 1))
end

-- Deep copy of plain tables (userdata and functions are shared). A table reached twice is
-- copied once (the copy shares it the same way), so cycles and shared parts are safe.
local function copy(v, seen)
  if type(v) ~= "table" then return v end
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do out[copy(k, seen)] = copy(x, seen) end
  return out
end
function M.copy(v) return copy(v, {}) end

-- Sorted keys of a table (strings before numbers, each ordered).
-- Keys of other types (booleans, tables) come last, ordered by type name.
function M.sorted_keys(t)
  if type(t) ~= "table" then check.fail("kiln.util.sorted_keys", "t", "a table", t) end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  local rank = { string = 1, number = 2 }
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta == tb and rank[ta] then return a < b end
    if ta ~= tb then
      if (rank[ta] or 3) ~= (rank[tb] or 3) then return (rank[ta] or 3) < (rank[tb] or 3) end
      return ta < tb
    end
    return false
  end)
  return keys
end

return M
