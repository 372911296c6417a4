-- kiln tokenize train FILE... [out=tokenizer.json] [vocab_size=8192] [min_frequency=0]
--                              [specials=<|endoftext|>] [alphabet=all]
-- kiln tokenize encode tokenizer=PATH FILE [out=FILE.bin] [allow_special=false]
-- kiln tokenize decode tokenizer=PATH FILE.bin
-- kiln tokenize stats tokenizer=PATH FILE...
--
-- train fits a byte-level BPE (Hugging Face BpeTrainer's rules) and writes tokenizer.json;
-- encode writes uint16 ids (out=) or prints one id per line; decode prints the text of a
-- uint16 token file; stats prints bytes, tokens and bytes per token of each file.
-- tokenizer= is a tokenizer.json, GPT-2's encoder.json, or a directory holding either.
local kiln = require "kiln"
local tokenizer = require "kiln.tokenizer"

local USAGE = [[usage:
  kiln tokenize train FILE... [out=tokenizer.json] [vocab_size=8192] [min_frequency=0] [specials=<|endoftext|>] [alphabet=all|seen]
  kiln tokenize encode tokenizer=PATH FILE [out=FILE.bin] [allow_special=false]
  kiln tokenize decode tokenizer=PATH FILE.bin
  kiln tokenize stats tokenizer=PATH FILE...]]

local function fail(msg) error("kiln tokenize: " .. msg .. "\n" .. USAGE, 0) end

local function need_tokenizer(opts)
  if opts.tokenizer == "" then fail("give tokenizer=PATH") end
  return tokenizer.load(opts.tokenizer)
end

local commands = {}

function commands.train(opts, files)
  if #files == 0 then fail("train: give at least one text file") end
  local specials = {}
  for s in tostring(opts.specials):gmatch("[^,]+") do specials[#specials + 1] = s end
  local tok = tokenizer.train{ files = files, vocab_size = math.tointeger(opts.vocab_size),
                               min_frequency = math.tointeger(opts.min_frequency), specials = specials,
                               alphabet = opts.alphabet }
  tok:save(opts.out)
  print(("wrote %s: vocabulary %d, %d merges"):format(opts.out, tok:vocab_size(), tok:num_merges()))
end

function commands.encode(opts, files)
  if #files ~= 1 then fail("encode: give one file") end
  local tok = need_tokenizer(opts)
  if opts.out ~= "" then
    local n = tok:encode_file(files[1], opts.out, opts.allow_special)
    io.stderr:write(("wrote %s: %d tokens\n"):format(opts.out, n))
    return
  end
  local text = assert(kiln.util.read_file(files[1]))
  local ids = tok:encode(text, opts.allow_special)
  io.write(table.concat(ids, "\n"), #ids > 0 and "\n" or "")
end

function commands.decode(opts, files)
  if #files ~= 1 then fail("decode: give one uint16 token file") end
  local tok = need_tokenizer(opts)
  io.write(tok:decode(tokenizer.read_bin(files[1])))
end

function commands.stats(opts, files)
  if #files == 0 then fail("stats: give at least one file") end
  local tok = need_tokenizer(opts)
  print(("%-40s %12s %12s %10s"):format("file", "bytes", "tokens", "bytes/tok"))
  for _, f in ipairs(files) do
    local s = tokenizer.stats(tok, f)
    print(("%-40s %12d %12d %10.3f"):format(f, s.bytes, s.tokens, s.bytes_per_token))
  end
end

return function(...)
  local args = { ... }
  local sub = table.remove(args, 1)
  if not sub or not commands[sub] then fail(sub and ("unknown subcommand '" .. sub .. "'") or "give a subcommand") end
  local defaults = { tokenizer = "", out = "", allow_special = false }
  if sub == "train" then
    defaults = { out = "tokenizer.json", vocab_size = 8192, min_frequency = 0, specials = "<|endoftext|>",
                 alphabet = "all" }
  end
  local opts, files = kiln.config.resolve(defaults, args, { positional = true })
  commands[sub](opts, files)
end
