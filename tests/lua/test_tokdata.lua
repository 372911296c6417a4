#!/usr/bin/env kiln
-- Token data and its tokenizer from Lua: kiln.dataset finds the tokenizer.json beside a .bin
-- (or takes one), its vocabulary is the tokenizer's, ids past it are refused naming file and
-- offset, training refuses a model too small for the data, batches decode through the
-- tokenizer of the dataset that filled each row, and data without a tokenizer says so.
local t = dofile("tests/lua/tap.lua")
local kiln = require "kiln"
local kiln_bin = (os.getenv("KILN_BUILD") or "build") .. "/kiln"
kiln.set_threads(1)
local dir = t.tmpdir()

-- A tokenizer and token files made from the test texts: dir/bpe/{train,val}.bin + tokenizer.json.
local tok = kiln.tokenizer.train { files = "tests/data/tiny_en.txt", vocab_size = 400,
                                   specials = { "<|endoftext|>" }, progress = false }
os.execute("mkdir -p '" .. dir .. "/bpe' '" .. dir .. "/bare'")
tok:save(dir .. "/bpe/tokenizer.json")
tok:encode_file("tests/data/tiny_en.txt", dir .. "/bpe/train.bin")
tok:encode_file("tests/data/tiny_other.txt", dir .. "/bpe/val.bin")
tok:encode_file("tests/data/tiny_other.txt", dir .. "/bare/val.bin")
local ids = kiln.tokenizer.read_bin(dir .. "/bpe/val.bin")
local largest = 0
for _, id in ipairs(ids) do if id > largest then largest = id end end
t.note(("tokenizer V = 400, largest id in val.bin = %d"):format(largest))

-- 1. Discovery, explicit tokenizers, and the vocabulary.
local val = kiln.dataset(dir .. "/bpe/val.bin")
t.eq(val:vocab(), 400, "a .bin with tokenizer.json beside it: V is the tokenizer's (not largest id + 1)")
t.eq(val:vocab_source(), "tokenizer", "vocab_source says so")
t.eq(val:tokenizer():vocab_size(), 400, "ds:tokenizer() is the tokenizer found beside it")
t.eq(val:tokenizer():decode(tok:encode("the cat")), "the cat", "  ... and it decodes")
t.ok(tostring(val):find("vocab 400: tokenizer", 1, true), "tostring shows V and its source: " .. tostring(val))
local train = kiln.dataset(dir .. "/bpe/train.bin", { split = "all" })
t.eq(rawequal(train:tokenizer(), val:tokenizer()) or train:tokenizer():vocab_size(), 400,
     "train.bin beside the same tokenizer.json has the same vocabulary")
local given = kiln.dataset(dir .. "/bare/val.bin", { tokenizer = tok })
t.eq(given:vocab(), 400, "tokenizer = a kiln.Tokenizer")
t.eq(kiln.dataset(dir .. "/bare/val.bin", { tokenizer = dir .. "/bpe/tokenizer.json" }):vocab(), 400,
     "tokenizer = a path to tokenizer.json")
t.eq(kiln.dataset(dir .. "/bare/val.bin", { tokenizer = dir .. "/bpe" }):vocab(), 400,
     "tokenizer = a directory holding tokenizer.json")
local bytes = kiln.dataset("tests/data/tiny_en.txt")
t.eq(bytes:tokenizer(), "bytes", "a text file: tokenizer() is \"bytes\"")
t.eq(bytes:vocab(), 256, "  ... V = 256")

-- 2. No tokenizer: today's rule, said out loud.
local out, code = t.sh(("%s -e 'local k = require \"kiln\"; print(k.dataset(\"%s/bare/val.bin\"):vocab())'")
                       :format(kiln_bin, dir))
t.eq(code, 0, "u16 without a tokenizer opens")
t.ok(out:find("has no tokenizer", 1, true) and out:find("largest id + 1 = " .. (largest + 1), 1, true),
     "  ... with a note on stderr naming the rule and V: " .. out:gsub("\n", " "))
t.ok(out:find("\n" .. (largest + 1) .. "\n", 1, true), "  ... and V = largest id + 1")
local bare = kiln.dataset(dir .. "/bare/val.bin", { tokenizer = false })
t.eq(bare:tokenizer(), nil, "tokenizer = false: none, and tokenizer() is nil")
t.eq(bare:vocab_source(), "largest id + 1, no tokenizer", "  ... vocab_source says so")

-- 3. Ids past the vocabulary are refused at open, naming the file and byte offset.
local bad = dir .. "/bpe/bad.bin"
local raw = t.read(dir .. "/bpe/val.bin")
t.write(bad, raw:sub(1, 20) .. string.pack("<I2", 400) .. raw:sub(23))
t.err("bad%.bin': token 400 at byte offset 20 is >= the vocabulary size 400 of its tokenizer",
      kiln.dataset, bad)
t.ok(kiln.dataset(bad, { tokenizer = false }):vocab() == 401, "the same file without a tokenizer: V = 401")
t.err("a tokenizer goes with format = \"u16\"", kiln.dataset, "tests/data/tiny_en.txt", { tokenizer = tok })
t.err("tokenizer must be a kiln.Tokenizer, a path", kiln.dataset, bad, { tokenizer = 3 })
t.err("cannot load its tokenizer", kiln.dataset, bad, { tokenizer = dir .. "/missing.json" })
t.err("unknown option 'tokeniser'", kiln.dataset, bad, { tokeniser = tok })

-- 4. A model smaller than the data's vocabulary is refused before any step.
local function train_with(V, data, sets)
  return kiln.train {
    model = kiln.model { vocab_size = V, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8, seed = 1 },
    optimizer = { lr = 1e-3 }, data = data, steps = 1, batch = 2, context = 8, seed = 1, quiet = true,
    eval = sets and { sets = sets, windows = 2 } or nil,
  }
end
t.err("val%.bin': its vocabulary has 400 tokens %(its tokenizer's%) but the model's vocab_size is 399",
      train_with, 399, val)
t.err("its vocabulary has 400 tokens", train_with, 399, given)
t.err("val%.bin': its vocabulary has 400 tokens", train_with, 300, bytes, { v = val })
t.note("  (the last: byte training data fits V = 300, the evaluation set does not)")
local s = train_with(400, val)
t.eq(s.status, "complete", "a model of the tokenizer's size trains on it")
t.ok(not pcall(train_with, 256, given), "a byte-sized model is refused on BPE data")

-- 5. Batches decode through the tokenizer of the dataset that filled each row.
local T = 24
local b = kiln.batch(3, T)
local rng = kiln.rng(7)
val:sample(b, rng, 1, 1)
bytes:sample(b, rng, 2, 1)
bare:sample(b, rng, 3, 1)
local row = {}
for p = 1, T do row[p] = (b:get(1, p)) end
row[T + 1] = select(2, b:get(1, T))
local text1 = b:text(1)
t.eq(text1, tok:decode(row), "row 1 (BPE data) decodes through its tokenizer")
t.ok(#text1 > T + 1, "  ... to more bytes than tokens (" .. #text1 .. " bytes from " .. (T + 1) .. " tokens)")
t.eq(#b:text(2), T + 1, "row 2 (byte data) stays bytes: one byte a token")
t.err("row 3 came from a u16 dataset opened without a tokenizer", b.text, b, 3)
t.eq(b:text(3, tok), tok:decode((function()
  local r = {}
  for p = 1, T do r[p] = (b:get(3, p)) end
  r[T + 1] = select(2, b:get(3, T))
  return r
end)()), "b:text(row, tok) decodes with the tokenizer given")
t.err("expected a kiln.Tokenizer or \"bytes\"", b.text, b, 1, 42)
local n_eval = val:eval_batch(b, 1)
t.ok(n_eval >= 1 and b:text(1) == tok:decode(kiln.tokenizer.read_bin(dir .. "/bpe/val.bin"))
     :sub(1, #b:text(1)), "eval_batch rows decode too: window 1 is the start of val.bin's text")
bytes:sample(b, rng, 1, 1)
t.eq(#b:text(1), T + 1, "a row refilled from byte data is bytes again (the row's tokenizer is replaced)")
local hand = kiln.batch(1, 2)
hand:set(1, 1, 104, 105)
hand:set(1, 2, 105, 33)
t.eq(hand:text(1), "hi!", "a batch set by hand with byte ids is bytes")
hand:set(1, 2, 300, 33)
t.err("row 1 holds token 300, not a byte %(set by hand%)", hand.text, hand, 1)
-- The row holds its tokenizer: decoding works after the dataset and tokenizer are closed.
local keep = kiln.batch(1, T)
do
  local ds = kiln.dataset(dir .. "/bare/val.bin", { tokenizer = dir .. "/bpe/tokenizer.json" })
  ds:sample(keep, kiln.rng(3))
  local expect = keep:text(1)
  ds:tokenizer():close()
  ds:close()
  collectgarbage()
  collectgarbage()
  t.eq(keep:text(1), expect, "a batch row keeps its tokenizer alive after the dataset is closed")
end

-- 6. Checkpoints carry their tokenizer.
local m = kiln.model { vocab_size = 416, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8, seed = 2 }
local ck = dir .. "/bpe.safetensors"
kiln.save(ck, { model = m, tokenizer = tok, meta = { note = "x" } })
local m2, meta = kiln.load(ck)
t.eq(tostring(meta.tokenizer), "kiln.Tokenizer(vocab 400, " .. tok:num_merges() .. " merges)",
     "kiln.load returns the embedded tokenizer as meta.tokenizer")
local sample = t.read("tests/data/tiny_other.txt")
t.eq(meta.tokenizer:decode(tok:encode(sample)), sample, "  ... and it decodes what the original encodes")
local same = true
local a_ids, b_ids = tok:encode(sample), meta.tokenizer:encode(sample)
for i = 1, math.max(#a_ids, #b_ids) do same = same and a_ids[i] == b_ids[i] end
t.ok(same, "  ... and encodes to the same ids")
t.eq(meta["kiln.tokenizer"], "bpe", "meta records the kind")
t.ok(type(meta["kiln.tokenizer.sha256"]) == "string" and #meta["kiln.tokenizer.sha256"] == 64,
     "  ... and the tokenizer text's SHA-256")
t.eq(meta["kiln.tokenizer.vocab_size"], "400", "  ... and its size")
t.eq(meta["kiln.tokenizer.json"], nil, "the embedded text itself is not copied into meta")
t.eq(meta.note, "x", "user metadata still round-trips")
m2:close()
local info = kiln.checkpoint_info(ck)
t.eq(info.meta["kiln.tokenizer"], "bpe", "checkpoint_info shows the kind")
t.eq(info.meta["kiln.tokenizer.json"], nil, "  ... without the text")
t.eq(kiln.load_tokenizer(ck):vocab_size(), 400, "kiln.load_tokenizer(path) without building the model")
local _, nometa = kiln.load(ck, { tokenizer = false })
t.eq(nometa.tokenizer, nil, "kiln.load{tokenizer = false} skips building it")

local ckb = dir .. "/bytes.safetensors"
kiln.save(ckb, { model = m, tokenizer = "bytes" })
t.eq(select(2, kiln.load(ckb)).tokenizer, "bytes", "a byte model's tokenizer is recorded as \"bytes\"")
t.eq(kiln.load_tokenizer(ckb), "bytes", "  ... kiln.load_tokenizer too")
local ckn = dir .. "/none.safetensors"
kiln.save(ckn, { model = m })
t.eq(select(2, kiln.load(ckn)).tokenizer, nil, "no tokenizer given: none recorded (nil)")
t.err("the tokenizer has 400 tokens but the model's vocab_size is 300", kiln.save, dir .. "/small.safetensors",
      { model = kiln.model { vocab_size = 300, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8 }, tokenizer = tok })
t.err("tokenizer \"bytes\" has 256 tokens but the model's vocab_size is 200", kiln.save, dir .. "/small.safetensors",
      { model = kiln.model { vocab_size = 200, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8 }, tokenizer = "bytes" })
t.ok(not t.read(dir .. "/small.safetensors"), "  ... and nothing is written")
t.err("field 'tokenizer' must be a kiln.Tokenizer or \"bytes\"", kiln.save, ckn, { model = m, tokenizer = "gpt2" })
t.err("meta key 'tokenizer' is reserved", kiln.save, ckn, { model = m, meta = { tokenizer = "gpt2" } })
-- A changed byte in the embedded text is caught by its hash.
local bytes_ck = t.read(ck)
local at = bytes_ck:find('\\"version\\":\\"1.0\\"')
t.ok(at ~= nil, "the embedded tokenizer text is in the header")
if at then
  local tampered = dir .. "/tampered.safetensors"
  t.write(tampered, bytes_ck:sub(1, at - 1) .. ('\\"version\\":\\"1.1\\"') .. bytes_ck:sub(at + #'\\"version\\":\\"1.0\\"'))
  t.err("tampered%.safetensors: the embedded tokenizer's SHA%-256 is %x+, the file records", kiln.load, tampered)
  t.ok(pcall(kiln.load, tampered, { tokenizer = false }), "  ... while tokenizer = false still loads the model")
end

-- 7. A training run's checkpoints carry the tokenizer of its data.
local run = dir .. "/run"
local rs = kiln.train {
  model = kiln.model { vocab_size = 400, block_size = 8, n_layer = 1, n_head = 1, n_embd = 8, seed = 1 },
  optimizer = { lr = 1e-3 }, data = train, steps = 2, batch = 2, context = 8, seed = 1, quiet = true,
  run_dir = run, checkpoint = { every = 2 },
}
t.eq(rs.status, "complete", "a run on BPE data completes")
local run_tok = kiln.load_tokenizer(run .. "/checkpoints/step_00000002.safetensors")
t.eq(run_tok and run_tok:decode(tok:encode("the cat")), "the cat", "its checkpoint decodes with the data's tokenizer")

t.done()
