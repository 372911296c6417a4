-- setup.lua — the opening the experiment scripts share: settings from <name>.yaml beside
-- the script, config=FILE, the quick profile and the command line (kiln.config's layering),
-- the thread count, the corpora as bytes or token files (the `tokenizer` setting), and a
-- clear stop when the data is missing. Load it relative to the script:
--
--   local here = (arg and arg[0] or "experiments/x.lua"):match("^(.*)/[^/]*$") or "."
--   local setup = dofile(here .. "/lib/setup.lua")
local kiln = require "kiln"
local util = require "kiln.util"

local M = {}

-- The settings of experiment `name`: <here>/<name>.yaml < config=FILE < its quick_settings
-- (with quick=true) < key=value. `rules` are kiln.config ranges, `whole` its settings that
-- are replaced as a whole. Sets the thread count when threads > 0.
function M.config(here, name, args, rules, whole)
  local cfg = kiln.config.resolve(here .. "/" .. name .. ".yaml", args, { rules = rules, whole = whole })
  if cfg.threads > 0 then kiln.set_threads(cfg.threads) end
  return cfg
end

-- Stops (naming the experiment and the file) at the first of cfg.data[role] for `roles`
-- that does not exist. `hint` goes in the parentheses after "run `make data` first".
function M.require_data(name, cfg, roles, hint)
  for _, role in ipairs(roles) do
    if not util.exists(cfg.data[role]) then
      kiln.config.fail("%s: %s is missing; run `make data` first (%s)", name, cfg.data[role], hint or "see docs/data.md")
    end
  end
end

-- ---- token data ----------------------------------------------------------------------
-- Every experiment reads its corpora as bytes or as the token files `make data` builds,
-- chosen by the setting `tokenizer`: bytes (V = 256), gpt2 (V = 50257) or bpe8k (V = 8192).
-- Settings name the corpus text files (data/<corpus>/<split>.txt); the token version of
-- such a file is data/<corpus>/<tokenizer>/<split>.bin, with its tokenizer.json beside it.
M.tokenizers = { "bytes", "gpt2", "bpe8k" }
M.tokenizer_rule = { one_of = M.tokenizers }

-- The file to read for corpus file `path` under `tokenizer`.
function M.token_file(path, tokenizer)
  if tokenizer == nil or tokenizer == "bytes" then return path end
  local dir, name = path:match("^(.-)([^/]+)%.txt$")
  if not name then
    kiln.config.fail("tokenizer=%s: '%s' is not a corpus text file (<dir>/<name>.txt), so it has no "
                     .. "token version <dir>/%s/<name>.bin", tokenizer, path, tokenizer)
  end
  return dir .. tokenizer .. "/" .. name .. ".bin"
end

-- The files of `files` ({role = corpus text path}) under `tokenizer`, each checked to exist
-- (with its tokenizer.json for token data): stops naming the experiment, role and file.
function M.resolve_data(name, tokenizer, files, hint)
  local out = {}
  for _, role in ipairs(util.sorted_keys(files)) do
    local path = M.token_file(files[role], tokenizer)
    local extra = tokenizer ~= "bytes" and (" (the " .. tokenizer .. " token version of " .. files[role] .. ")") or ""
    if not util.exists(path) then
      kiln.config.fail("%s: %s%s for '%s' is missing; run `make data` first (%s)", name, path, extra, role,
                       hint or "see docs/data.md")
    end
    if tokenizer ~= "bytes" and not kiln.data.beside(path) then
      kiln.config.fail("%s: %s has no tokenizer.json beside it; run `make data` again", name, path)
    end
    out[role] = path
  end
  return out
end

-- Open the datasets of `files` under `tokenizer`: returns {role = kiln.Dataset}, the model's
-- vocab_size (256 for bytes, else the tokenizer's size) and the tokenizer ("bytes" or a
-- kiln.Tokenizer). Every role must share one tokenizer (the same tokenizer.json content).
function M.open_data(name, tokenizer, files, hint)
  tokenizer = tokenizer or "bytes"
  local paths = M.resolve_data(name, tokenizer, files, hint)
  local sets, vocab, tok, first_role, first_hash = {}, nil, nil, nil, nil
  for _, role in ipairs(util.sorted_keys(paths)) do
    local ds = kiln.dataset(paths[role])
    local hash = tokenizer ~= "bytes" and kiln.sha256_file(kiln.data.beside(paths[role])) or "bytes"
    if first_hash and hash ~= first_hash then
      kiln.config.fail("%s: %s and %s were made by different tokenizers (their tokenizer.json differ); "
                       .. "rebuild them with `make data`", name, paths[first_role], paths[role])
    end
    sets[role], vocab, tok = ds, ds:vocab(), ds:tokenizer()
    first_role, first_hash = first_role or role, first_hash or hash
  end
  return sets, vocab, tok
end

-- Bytes of text per token of corpus file `text_path` in dataset ds (1 for bytes): turns a
-- loss per token into a loss per byte, comparable across tokenizers.
function M.bytes_per_token(text_path, ds)
  if ds:tokenizer() == "bytes" then return 1 end
  local f = io.open(text_path, "rb")
  if not f then return 0 / 0 end
  local size = f:seek("end")
  f:close()
  return size / ds:num_tokens()
end

-- The unit of a loss under `tokenizer`, for tables and plots: "nats/byte" or "nats/token (bpe8k)".
function M.loss_unit(tokenizer)
  if tokenizer == nil or tokenizer == "bytes" then return "nats/byte" end
  return "nats/token (" .. tokenizer .. ")"
end

-- With the setting check_data=true an experiment stops after opening its data, printing
-- what it would read: a quick check of settings and corpora without training.
function M.report_data(name, cfg, sets, vocab)
  local parts = {}
  for _, role in ipairs(util.sorted_keys(sets)) do parts[#parts + 1] = role .. "=" .. sets[role]:path() end
  print(("%s: tokenizer=%s, vocab_size=%d, data: %s"):format(name, cfg.tokenizer or "bytes", vocab,
                                                             table.concat(parts, " ")))
  if cfg.check_data then os.exit(0) end
end

-- Ranges shared by the scripts' settings.
M.positive = { min = 1 }          -- counts: steps, batch sizes, windows, widths
M.count = { min = 0 }             -- may be 0: warmup steps, threads
M.rate = { above = 0 }            -- learning rates
M.fraction = { min = 0, max = 1 }

-- The model of a width sweep (μTransfer, the μP ladder): cfg.model's n_layer, head_size and
-- context, cfg.train.seed, and under param "mup" cfg.mup's base width and multipliers.
function M.width_model(cfg, param, width, vocab)
  local mc = cfg.model
  local c = { vocab_size = vocab, block_size = mc.context, n_layer = mc.n_layer, n_embd = width,
              n_head = width // mc.head_size, seed = cfg.train.seed }
  if param == "mup" then
    c.parametrization, c.base_width = "mup", cfg.mup.base_width
    c.output_mult, c.attn_mult, c.zero_query = cfg.mup.output_mult, cfg.mup.attn_mult, cfg.mup.zero_query
  end
  return c
end

-- Sweeps record a run that diverged in <run_dir>/diverged and do not retry it.
function M.diverged(run_dir) return util.exists(run_dir .. "/diverged") end

-- kiln.train(opts) -> its summary, or nil when the run diverged (kiln.train.is_divergence:
-- a non-finite loss, evaluation or parameter), which is then recorded in
-- <opts.run_dir>/diverged. Other errors are raised.
function M.train_or_diverged(opts)
  local ok, s = pcall(kiln.train, opts)
  if ok then return s end
  if not kiln.train.is_divergence(s) then error(s, 0) end
  util.mkdir(opts.run_dir)
  util.write_atomic(opts.run_dir .. "/diverged", s .. "\n")
  return nil
end

return M
