#!/usr/bin/env kiln
-- The experiments' `tokenizer` setting: every experiment resolves its corpora to bytes or to
-- the token files of `make data` (check_data=true: open, print, stop), a missing token file
-- is named, and the quick re-weighting suite runs end to end on bpe8k tokens with a model of
-- the tokenizer's vocabulary, its checkpoints carrying that tokenizer. Needs the corpora of
-- `make data` for the parts that read them (skipped without).
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local util = require "kiln.util"
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
local dir = t.tmpdir()

arg = { [0] = "experiments/reweighting.lua" }
local setup = dofile("experiments/lib/setup.lua")

-- 1. The path rule, without any corpus.
t.eq(setup.token_file("data/techdocs/train.txt", "bytes"), "data/techdocs/train.txt", "bytes: the text file itself")
t.eq(setup.token_file("data/techdocs/val.txt", "bpe8k"), "data/techdocs/bpe8k/val.bin", "bpe8k: <dir>/bpe8k/<name>.bin")
t.eq(setup.token_file("val.txt", "gpt2"), "gpt2/val.bin", "a bare file name works too")
t.err("'data/x.bin' is not a corpus text file", setup.token_file, "data/x.bin", "gpt2")
t.eq(setup.loss_unit("bytes"), "nats/byte", "loss unit for bytes")
t.eq(setup.loss_unit("gpt2"), "nats/token (gpt2)", "loss unit for tokens names the tokenizer")
-- (every file points into tests/data, so the message does not depend on whether `make data` ran)
local out, code = t.sh(("%s experiments/reweighting.lua check_data=true tokenizer=bpe8k data.train=tests/data/tiny_en.txt "
                        .. "data.val=tests/data/tiny_en.txt data.ood=tests/data/tiny_en.txt"):format(kiln_bin))
t.ok(code ~= 0 and out:find("tests/data/bpe8k/tiny_en%.bin %(the bpe8k token version of tests/data/tiny_en%.txt%) for '%a+' is missing"),
     "a missing token file is named with the text file it stands for: " .. out:gsub("\n", " "))
out, code = t.sh(("%s experiments/reweighting.lua check_data=true tokenizer=bpe4k"):format(kiln_bin))
t.ok(code ~= 0 and out:find("setting 'tokenizer' must be one of bytes, gpt2, bpe8k", 1, true), "an unknown tokenizer is refused")

-- 2. Every experiment resolves its data under each tokenizer.
local needed = { "data/techdocs", "data/techdocs2", "data/austen" }
local have = true
for _, d in ipairs(needed) do
  for _, f in ipairs { "/train.txt", "/val.txt", "/bpe8k/train.bin", "/bpe8k/val.bin", "/gpt2/val.bin" } do
    have = have and util.exists(d .. f)
  end
end
if not have then
  t.skip("the corpora of `make data` (text and token files) are not built")
  t.done()
end

local V = { bytes = 256, bpe8k = 8192, gpt2 = 50257 }
local scripts = { "reweighting", "temporal_scaling", "warmstart", "mutransfer", "mixture_selection",
                  "continual/warmup_length", "continual/peak_lr", "continual/same_data",
                  "continual/early_checkpoints", "continual/all" }
for _, s in ipairs(scripts) do
  -- GPT-2's files are the largest: check them on two scripts, bytes and bpe8k on all.
  local toks = (s == "reweighting" or s == "continual/all") and { "bytes", "bpe8k", "gpt2" } or { "bytes", "bpe8k" }
  for _, tk in ipairs(toks) do
    local o, c = t.sh(("%s experiments/%s.lua check_data=true tokenizer=%s"):format(kiln_bin, s, tk))
    local line = o:match("tokenizer=" .. tk .. ", vocab_size=(%d+), data: ([^\n]*)")
    local files_ok = line ~= nil
    if line then
      local _, list = o:match("tokenizer=" .. tk .. ", vocab_size=(%d+), data: ([^\n]*)")
      for path in list:gmatch("=(%S+)") do
        if tk == "bytes" then files_ok = files_ok and path:match("%.txt$") ~= nil
        else files_ok = files_ok and path:match("/" .. tk .. "/[^/]+%.bin$") ~= nil end
      end
    end
    t.ok(c == 0 and tonumber(line) == V[tk] and files_ok,
         ("%s tokenizer=%s: vocab_size %d, every file %s"):format(s, tk, V[tk], tk == "bytes" and "a .txt" or "a " .. tk .. " .bin")
         .. (c == 0 and "" or (" [" .. o:gsub("\n", " ") .. "]")))
  end
end

-- 3. The quick re-weighting suite on bpe8k tokens, shrunk to a few steps.
local suite = dir .. "/rw"
local cmd = ("%s experiments/reweighting.lua quick=true tokenizer=bpe8k out=%s seeds=[1] threads=1 "
  .. "model.n_layer=1 model.n_head=2 model.n_embd=16 model.context=32 train.steps=3 train.batch=2 "
  .. "train.warmup=1 train.eval_every=3 train.eval_windows=2"):format(kiln_bin, suite)
local so, sc = t.sh(cmd)
t.eq(sc, 0, "the quick re-weighting suite runs with tokenizer=bpe8k" .. (sc == 0 and "" or (": " .. so:sub(-600))))
local md = t.read(suite .. "/results.md") or ""
local rows = 0
for _, v in ipairs { "uniform", "head", "middle", "tail" } do if md:find("| " .. v, 1, true) then rows = rows + 1 end end
t.eq(rows, 4, "its table has the four variants")
t.ok(so:find("losses in nats per bpe8k token", 1, true), "the summary names the loss unit")
local ck = util.list_dir(suite .. "/uniform/seed1/checkpoints", "%.safetensors$")
local tok = #ck > 0 and kiln.load_tokenizer(suite .. "/uniform/seed1/checkpoints/" .. ck[#ck])
t.ok(tok and tok ~= "bytes" and tok:vocab_size() == 8192, "its checkpoints carry the bpe8k tokenizer")
local info = #ck > 0 and kiln.checkpoint_info(suite .. "/uniform/seed1/checkpoints/" .. ck[#ck])
t.eq(info and info.meta["kiln.config.vocab_size"], "8192", "and the model's vocab_size is the tokenizer's")

t.done()
