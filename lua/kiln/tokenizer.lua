-- kiln.tokenizer — byte-level BPE tokenizers (GPT-2's scheme) from the C core.
--   local tok = kiln.tokenizer.load("data/gpt2")            -- encoder.json + vocab.bpe
--   local tok = kiln.tokenizer.load("run/tokenizer.json")   -- Hugging Face format
--   local tok = kiln.tokenizer.train{ files = {"data/techdocs/train.txt"}, vocab_size = 8192 }
--   local ids = tok:encode("text")    tok:decode(ids)    tok:vocab_size()    tok:save(path)
-- Ids start at 0, as in the vocabulary files and token .bin files.
local core = require "kiln.core"
local check = require "kiln.check"
local util = require "kiln.util"

local M = {}

local function fail(fmtstr, ...) error("kiln.tokenizer: " .. fmtstr:format(...), 0) end

-- load(path): a tokenizer.json file, GPT-2's encoder.json (vocab.bpe beside it), or a
-- directory holding either tokenizer.json or encoder.json + vocab.bpe.
function M.load(path)
  if type(path) ~= "string" then fail("load: expected a path (got %s)", type(path)) end
  local dir = path:gsub("/+$", "")
  if util.is_dir(dir) then
    if util.exists(dir .. "/tokenizer.json") then return core.tok_load_json(dir .. "/tokenizer.json") end
    if util.exists(dir .. "/encoder.json") and util.exists(dir .. "/vocab.bpe") then
      return core.tok_load_gpt2(dir .. "/encoder.json", dir .. "/vocab.bpe")
    end
    fail("load: directory '%s' has neither tokenizer.json nor encoder.json + vocab.bpe", dir)
  end
  if path:match("encoder%.json$") then
    local bpe = path:gsub("encoder%.json$", "vocab.bpe")
    return check.call("kiln.tokenizer.load", core.tok_load_gpt2, path, bpe)
  end
  return check.call("kiln.tokenizer.load", core.tok_load_json, path)
end

-- gpt2(encoder_json, vocab_bpe)
function M.gpt2(encoder_json, vocab_bpe)
  check.string("kiln.tokenizer.gpt2", "encoder_json", encoder_json, true)
  check.string("kiln.tokenizer.gpt2", "vocab_bpe", vocab_bpe, true)
  return check.call("kiln.tokenizer.gpt2", core.tok_load_gpt2, encoder_json, vocab_bpe)
end

-- train{files = path or {paths}, vocab_size = N, min_frequency = 0, specials = {...},
--       alphabet = "all" | "seen", progress = (stderr is a terminal)}
function M.train(opts)
  if type(opts) ~= "table" then fail("train: expected a table of options") end
  local known = { files = true, vocab_size = true, min_frequency = true, specials = true, alphabet = true,
                  progress = true }
  for k in pairs(opts) do
    if not known[k] then fail("train: unknown option '%s' (known: %s)", tostring(k),
                              table.concat(util.sorted_keys(known), ", ")) end
  end
  local files = opts.files
  if type(files) == "string" then files = { files } end
  if type(files) ~= "table" or #files == 0 then fail("train: 'files' must be a path or a list of paths") end
  for _, f in ipairs(files) do
    if not util.exists(f) then fail("train: cannot read training file '%s'", tostring(f)) end
  end
  local progress = opts.progress
  if progress == nil then progress = core.isatty(2) end
  return core.tok_train{
    files = files, vocab_size = opts.vocab_size, min_frequency = opts.min_frequency,
    specials = opts.specials, alphabet = opts.alphabet, progress = progress,
  }
end

-- stats(tok, path) -> {bytes = , tokens = , bytes_per_token = } for a text file.
function M.stats(tok, path)
  check.arg("kiln.tokenizer.stats", "tok", tok, "kiln.Tokenizer")
  check.string("kiln.tokenizer.stats", "path", path, true)
  local text, err = util.read_file(path)
  if not text then fail("stats: cannot read '%s': %s", path, tostring(err)) end
  local n = tok:count(text)
  return { bytes = #text, tokens = n, bytes_per_token = n > 0 and #text / n or 0 / 0 }
end

-- read_bin(path) -> {ids}: a little-endian uint16 token file (nanoGPT's train.bin).
function M.read_bin(path)
  local s, err = util.read_file(path)
  if not s then fail("read_bin: cannot read '%s': %s", path, tostring(err)) end
  if #s % 2 ~= 0 then fail("read_bin: '%s' has an odd size (%d bytes); uint16 tokens expected", path, #s) end
  local ids, n = {}, #s // 2
  for i = 1, n do ids[i] = string.unpack("<I2", s, 2 * i - 1) end
  return ids
end

return M
