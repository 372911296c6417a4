-- kiln.mup — the optimizer side of μP (Tensor Programs V, Yang et al. 2022; docs/warmstart.md §1) and the μP table of
-- a model. The model side (init, 1/d_head attention, the readout multiplier) is in the core:
-- kiln.model{..., parametrization = "mup", base_width = 64, output_mult = 1, attn_mult = 1,
-- zero_query = false}. See docs/warmstart.md.
--
--   local opt = kiln.mup.optimizer(model, { lr = 1e-2, weight_decay = 0, decoupled_wd = false })
--   for _, row in ipairs(kiln.mup.table(model)) do print(row.name, row.role, row.init_std, row.lr_scale) end
--   local cfg2 = kiln.mup.widen(cfg, 2)    -- twice as wide: n_head x2, head size fixed
--
-- Roles and rules (multiplier form of the `mup` package; width_mult = n_embd / base_width):
--   hidden   c_attn, attn.c_proj, c_fc, mlp.c_proj weights (width x width): init std
--            0.02/sqrt(width_mult) (residual projections also /sqrt(2·n_layer)); Adam lr
--            x 1/width_mult; weight decay x width_mult (lr·wd constant: mup's MuAdam default)
--            unless decoupled_wd = true (then x 1).
--   input    wpe (positions -> width): std 0.02, lr x 1.
--   readout  wte, tied: embedding and output at once. It is a vector-like parameter (one
--            infinite dimension): std 0.02 and lr x 1, while the forward multiplies the
--            logits by output_mult/width_mult (MuReadout / MuSharedReadout). The effective
--            readout W/width_mult then has init variance ∝ 1/fan_in² and Adam updates
--            ∝ 1/fan_in, the table's output column.
--   bias     all biases: init 0, lr x 1.   norm: LayerNorm weights: init 1, lr x 1.
-- Under the standard parametrisation every scale is 1 (the table still lists the init stds).
local kiln = require "kiln"
local check = require "kiln.check"

local M = {}

local function config_of(who, x)
  check.arg(who, "model", x, "kiln.Model|table")
  if type(x) == "table" then return x end
  return x:config()
end

-- n_embd / base_width under μP, 1 under SP.
function M.width_mult(x)
  local who = "kiln.mup.width_mult"
  local c = config_of(who, x)
  if c.parametrization ~= "mup" then return 1 end
  check.positive(who, "n_embd", c.n_embd)
  if c.base_width ~= nil then check.positive(who, "base_width", c.base_width) end
  return c.n_embd / (c.base_width or c.n_embd)
end

-- The μP role of a parameter from model:params(): hidden, input, readout, bias or norm.
function M.role(p)
  check.arg("kiln.mup.role", "p", p, "table")
  check.string("kiln.mup.role", "p.name", p.name)
  if p.kind == "matrix" then return "hidden" end
  if p.kind == "bias" then return "bias" end
  if p.kind == "norm" then return "norm" end
  if p.name:find("wte", 1, true) then return "readout" end
  return "input"
end

local function fan_in(p, c)
  if p.kind == "matrix" then return p.shape[2] end
  if p.name:find("wte", 1, true) then return c.n_embd end   -- as the (tied) readout
  if p.name:find("wpe", 1, true) then return c.block_size end
  return 1
end

-- One row per tensor: name, kind, role, shape, fan_in, init_std (the std kiln.model's init
-- draws from; 0 for biases and norms, whose init is the constant init_value), init_value,
-- lr_scale, wd_scale (the multiplier of weight_decay; 0 for biases and norms, which AdamW
-- never decays), and with hparams.lr the effective lr (lr·lr_scale). hparams may carry
-- decoupled_wd (see M.optimizer).
function M.table(model, hparams)
  local who = "kiln.mup.table"
  check.arg(who, "model", model, "kiln.Model")
  hparams = check.arg(who, "hparams", hparams, "?table") or {}
  if hparams.lr ~= nil then check.number(who, "hparams.lr", hparams.lr, 0) end
  local c = model:config()
  local mup = c.parametrization == "mup"
  local wm = M.width_mult(c)
  local rows = {}
  for _, p in ipairs(model:params()) do
    local role = M.role(p)
    local std, value = 0.02, 0
    if role == "hidden" then
      if p.name:find("c_proj.weight", 1, true) then std = std / math.sqrt(2 * c.n_layer) end
      std = std / math.sqrt(wm)
    elseif role == "bias" then std = 0
    elseif role == "norm" then std, value = 0, 1 end
    -- kiln.adamw decays 2-D tensors only (docs/design.md §3.3): biases and norms have wd_scale 0
    local lr_scale, wd_scale = 1, (role == "bias" or role == "norm") and 0 or 1
    if mup and role == "hidden" then
      lr_scale = 1 / wm
      if not hparams.decoupled_wd then wd_scale = wm end
    end
    local row = { name = p.name, kind = p.kind, role = role, shape = p.shape, fan_in = fan_in(p, c),
                  init_std = std, init_value = value, lr_scale = lr_scale, wd_scale = wd_scale,
                  zero_query = mup and c.zero_query and p.name:find("c_attn.weight", 1, true) and true or nil }
    if hparams.lr then row.lr = hparams.lr * lr_scale end
    rows[#rows + 1] = row
  end
  return rows
end

-- A kiln.adamw for the model with μP's per-tensor lr and weight-decay scales (all 1 under
-- SP, so the same call serves both parametrisations). hparams: kiln.adamw's (lr, beta1,
-- beta2, eps, weight_decay, clip) plus decoupled_wd (false: wd x width_mult on hidden
-- matrices so lr·wd stays constant across widths, as mup's MuAdam; true: wd unchanged).
function M.optimizer(model, hparams)
  local who = "kiln.mup.optimizer"
  check.arg(who, "model", model, "kiln.Model")
  hparams = check.arg(who, "hparams", hparams, "?table") or {}
  check.arg(who, "hparams.decoupled_wd", hparams.decoupled_wd, "?boolean")
  local h = {}
  for k, v in pairs(hparams) do if k ~= "decoupled_wd" then h[k] = v end end
  local opt = check.call(who, kiln.adamw, model, h)
  for _, row in ipairs(M.table(model, hparams)) do
    if row.role == "hidden" and (row.lr_scale ~= 1 or row.wd_scale ~= 1) then
      opt:set_group("^" .. row.name:gsub("%p", "%%%0") .. "$", { lr_scale = row.lr_scale, wd_scale = row.wd_scale })
    end
  end
  return opt
end

-- A config k times as wide: n_embd and n_head x k (head size fixed, so growth keeps whole
-- heads), every other field (base_width included) unchanged. k may be fractional as long as
-- the sizes stay whole.
function M.widen(cfg, k)
  local who = "kiln.mup.widen"
  check.arg(who, "cfg", cfg, "table")
  check.integer(who, "cfg.n_embd", cfg.n_embd, 1)
  check.integer(who, "cfg.n_head", cfg.n_head, 1)
  check.positive(who, "k", k)
  local out = {}
  for key, v in pairs(cfg) do out[key] = v end
  local d, h = cfg.n_embd * k, cfg.n_head * k
  if d ~= math.floor(d) or h ~= math.floor(h) or h < 1 then
    error(("kiln.mup.widen: %d x %s is not a whole width with whole heads"):format(cfg.n_embd, tostring(k)), 0)
  end
  out.n_embd, out.n_head = math.tointeger(d), math.tointeger(h)
  return out
end

return M
