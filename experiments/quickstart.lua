-- quickstart.lua — the smallest whole experiment: train a small byte-level GPT on a text
-- file with a warmup + cosine learning rate written inline, report training and validation
-- loss, save a checkpoint, load it into a fresh model and show the same validation loss.
--
--   kiln experiments/quickstart.lua [steps=300] [train=path] [val=path] [out=dir] [threads=n]
--                                   [config=FILE.yaml] [key=value ...]
--
-- Without train=..., it uses data/techdocs (from `make data`) when present, otherwise the
-- small corpus in tests/data (validation then reuses the training text: say so loudly).
-- The settings below are resolved by kiln.config, as in every experiment: these defaults,
-- then config=FILE.yaml, then key=value (docs/guide.md, "Settings"). "" means "not set".
local kiln = require "kiln"

local P = { min = 1 }
local opt = kiln.config.resolve({
  steps = 300, batch = 16, context = 64, n_layer = 2, n_head = 4, n_embd = 64, lr = 3e-3, warmup = 30,
  seed = 1, eval_windows = 64, out = "", train = "", val = "", threads = 0,
}, arg, { rules = { steps = P, batch = P, context = P, n_layer = P, n_head = P, n_embd = P,
                    lr = { above = 0 }, warmup = { min = 0 }, eval_windows = P, threads = { min = 0 } } })
if opt.threads > 0 then kiln.set_threads(opt.threads) end

local function exists(p) local f = io.open(p, "rb"); if f then f:close() end; return f ~= nil end

local train_path, val_path = opt.train ~= "" and opt.train or nil, opt.val ~= "" and opt.val or nil
if not train_path then
  if exists("data/techdocs/train.txt") then
    train_path, val_path = "data/techdocs/train.txt", "data/techdocs/val.txt"
  else
    train_path = "tests/data/tiny_en.txt"
    print("note: data/techdocs is missing (run `make data`); training on the tiny test corpus,")
    print("      and validating on the same text, so the validation loss measures memorisation.")
  end
end
val_path = val_path or train_path

local train = kiln.dataset(train_path)
local val = kiln.dataset(val_path)
local B, T = opt.batch, opt.context
train:check_window(T)
val:check_window(T)

local model = kiln.model { vocab_size = 256, block_size = T, n_layer = opt.n_layer,
                           n_head = opt.n_head, n_embd = opt.n_embd, seed = opt.seed }
local adamw = kiln.adamw(model, { lr = opt.lr, weight_decay = 0.1, clip = 1.0 })
local n_params = model:num_params()
print(("model: %d layers, d=%d, %d heads, context %d: %d parameters; %d threads"):format(
  opt.n_layer, opt.n_embd, opt.n_head, T, n_params, kiln.get_threads()))
print(("data: %s (%d bytes), validation %s"):format(train_path, train:num_tokens(), val_path))

-- The learning rate, inline: linear warmup, then cosine down to a tenth of the peak.
local function lr_at(step)
  local peak, floor = opt.lr, opt.lr * 0.1
  if step < opt.warmup then return peak * (step + 1) / opt.warmup end
  local progress = (step - opt.warmup) / math.max(1, opt.steps - opt.warmup)
  return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * math.min(1, progress)))
end

-- Mean loss over a fixed list of validation windows: the same tokens every time.
local eval_batch = kiln.batch(B, T)
local function evaluate(m)
  local n_windows = math.min(opt.eval_windows, val:num_eval_windows(T))
  local total, rows, first = 0, 0, 1
  while first <= n_windows do
    local n = val:eval_batch(eval_batch, first, n_windows)
    total = total + m:forward(eval_batch) * n
    rows, first = rows + n, first + n
  end
  return total / rows
end

local batch, rng = kiln.batch(B, T), kiln.rng(opt.seed)
local t0, loss = os.clock(), nil
local wall0 = os.time()
print(("step %5s  %8s  %9s  %8s"):format("", "loss", "lr", "grad"))
for step = 0, opt.steps - 1 do
  train:sample(batch, rng)
  model:zero_grad()
  loss = model:forward(batch)
  model:backward()
  local lr = lr_at(step)
  local norm = adamw:step { lr = lr }
  if step % 50 == 0 or step == opt.steps - 1 then
    print(("step %5d  %8.4f  %9.2e  %8.3f"):format(step, loss, lr, norm))
  end
end
local elapsed = os.time() - wall0
local val_loss = evaluate(model)
print(("trained %d steps (%d tokens) in ~%ds; train loss %.4f, validation loss %.4f (%.3f bits/byte)"):format(
  opt.steps, opt.steps * B * T, elapsed, loss, val_loss, val_loss / math.log(2)))

-- Save, load into a fresh model, and check the loss is the same to the bit.
local out = opt.out ~= "" and opt.out or nil
if not out then
  out = "runs/quickstart"
  local k = 1
  while exists(out .. "/model.safetensors") do k = k + 1; out = ("runs/quickstart-%d"):format(k) end
end
os.execute(("mkdir -p '%s'"):format(out))
local path = out .. "/model.safetensors"
if exists(path) then kiln.config.fail("quickstart: %s exists; refusing to overwrite it (pass out=DIR)", path) end
kiln.save(path, { model = model, optimizer = adamw, meta = { step = opt.steps, rng = rng:state() } })
local reloaded, meta = kiln.load(path)
local val_loss2 = evaluate(reloaded)
print(("saved %s (step %s); reloaded validation loss %.4f: %s"):format(path, meta.step, val_loss2,
  val_loss2 == val_loss and "identical" or "DIFFERENT"))
if val_loss2 ~= val_loss then error("quickstart: the reloaded model gives a different loss", 0) end
