-- kiln.data — opening token datasets together with the tokenizer that made them.
-- `kiln.dataset` is M.open:
--   kiln.dataset("data/techdocs/train.txt")                      -- bytes, V = 256
--   kiln.dataset("data/techdocs/bpe8k/train.bin")                -- u16, tokenizer.json found beside it
--   kiln.dataset("x.bin", { tokenizer = tok_or_path, split = "val" })
-- Rules (docs/data.md, "Token data and tokenizers"):
--   format: as given; else "u16" for a name ending in .bin (nanoGPT's token files), else "bytes".
--   tokenizer (u16 only): a kiln.Tokenizer; a path (a tokenizer.json, GPT-2's encoder.json, or
--     a directory holding either); false for none; when absent, <dir of the file>/tokenizer.json
--     if it exists. Without one the vocabulary is the largest id + 1, and a note on stderr says so.
local core = require "kiln.core"
local util = require "kiln.util"

local check = require "kiln.check"

local M = {}

local function fail(fmtstr, ...) error("kiln.dataset: " .. fmtstr:format(...), 0) end

-- Tokenizers loaded from files, by path and content hash: the train and val files beside one
-- tokenizer.json share one object (GPT-2's takes ~0.1 s to load), and a rewritten file is
-- loaded again.
local loaded = setmetatable({}, { __mode = "v" })

local function load_tokenizer(path)
  local file = path
  if util.is_dir(path) and util.exists(path .. "/tokenizer.json") then file = path .. "/tokenizer.json" end
  if util.is_dir(file) or not util.exists(file) then return require("kiln.tokenizer").load(path) end
  local key = file .. "\0" .. core.sha256_file(file)
  local tok = loaded[key]
  if not tok then
    tok = require("kiln.tokenizer").load(file)
    loaded[key] = tok
  end
  return tok
end

-- The tokenizer.json beside a token file, or nil.
function M.beside(path)
  check.string("kiln.data.beside", "path", path, true)
  local dir = path:match("^(.*)/[^/]*$") or "."
  local candidate = dir .. "/tokenizer.json"
  if util.exists(candidate) then return candidate end
  return nil
end

local noted = {}

local function note_no_tokenizer(ds)
  local path = ds:path()
  if noted[path] then return end
  noted[path] = true
  io.stderr:write(("kiln.dataset: note: %s has no tokenizer (none given, no tokenizer.json beside it); "
    .. "its vocabulary is taken as the largest id + 1 = %d. Pass tokenizer = ... to fix it.\n"):format(path, ds:vocab()))
end

local known = { format = true, split = true, tokenizer = true }

-- open(path [, {format =, split =, tokenizer =}]) -> kiln.Dataset
function M.open(path, opts)
  if type(path) ~= "string" then fail("expected a file path (got %s)", type(path)) end
  opts = opts or {}
  if type(opts) ~= "table" then fail("'%s': options must be a table (got %s)", path, type(opts)) end
  for k in pairs(opts) do
    if not known[k] then fail("'%s': unknown option '%s' (known: format, split, tokenizer)", path, tostring(k)) end
  end
  local format = opts.format or (path:match("%.bin$") and "u16" or "bytes")
  local tok = opts.tokenizer
  if tok == "bytes" then
    if opts.format == "u16" then fail("'%s': tokenizer \"bytes\" reads bytes, not format u16", path) end
    format, tok = "bytes", nil
  end
  if format == "bytes" and tok then
    fail("'%s' is read as bytes (V = 256); a tokenizer goes with format = \"u16\" token files", path)
  end
  if format == "u16" and tok == nil then
    local found = M.beside(path)
    if found then tok = found end
  end
  if tok ~= nil and tok ~= false and type(tok) ~= "string" and type(tok) ~= "userdata" then
    fail("'%s': tokenizer must be a kiln.Tokenizer, a path, \"bytes\" or false (got %s)", path, type(tok))
  end
  if type(tok) == "string" then
    local ok, t = pcall(load_tokenizer, tok)
    if not ok then fail("'%s': cannot load its tokenizer %s: %s", path, tok, tostring(t)) end
    tok = t
  end
  if tok == false then tok = nil end
  local ds = check.call("kiln.dataset", core.dataset, path, { format = format, split = opts.split, tokenizer = tok })
  if format == "u16" and not tok and opts.tokenizer ~= false then note_no_tokenizer(ds) end
  return ds
end

return M
