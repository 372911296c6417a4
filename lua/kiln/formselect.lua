-- kiln.formselect — choose the temporal law's forms (how a0, a1, a2 drift with training) by
-- held-out validation inside the fit window, never looking past the cut.
--
--   local formselect = require "kiln.formselect"
--   local r = formselect.choose(run, { set = "val", cut = 0.3 })
--   r.forms                 -- {a0 = "log", a1 = "power", a2 = "cosine"}
--   tsl.predict(r.model, step).loss
--
-- The checkpoints in [fit_from, cut] are split in time: the first (1 − holdout) of them fit
-- every candidate form of every parameter, the rest (still before the cut) score each
-- combination by the MSE of the predicted average loss; the best combination is refitted on
-- all checkpoints up to the cut. The function only ever sees a copy of the run cut at `cut`,
-- so what lies after the cut cannot change the choice or the model.
local tsl = require "kiln.tsl"
local check = require "kiln.check"

local M = {}

local PARAMS = { "a0", "a1", "a2" }
M.candidates = { "log", "hyperbolic", "power", "linear", "constant", "lr", "cosine" }
M.holdout = 0.25

local function fail(fmt, ...) error("kiln.formselect: " .. fmt:format(...), 0) end

-- A step from an integer step or a fraction in (0, 1] of the planned steps.
local function resolve_cut(v, run, what)
  if math.type(v) == "integer" and v >= 1 then return v end
  if type(v) == "number" and v > 0 and v <= 1 then return math.floor(v * run.total_steps + 0.5) end
  fail("%s must be a step >= 1 or a fraction of the run's %s steps in (0, 1] (got %s)", what, tostring(run.total_steps), tostring(v))
end

-- A copy of the run holding only the checkpoints at or before `cut` (schedule facts are kept:
-- they are known before training).
function M.truncate(run, cut)
  check.arg("kiln.formselect.truncate", "run", run, "table")
  check.arg("kiln.formselect.truncate", "run.sets", run.sets, "table")
  check.number("kiln.formselect.truncate", "cut", cut)
  local copy = {}
  for k, v in pairs(run) do copy[k] = v end
  copy.sets, copy.set_names = {}, {}
  for _, name in ipairs(run.set_names) do
    local s = run.sets[name]
    local t = { name = name, steps = {}, tokens = {}, losses = {}, mean = {} }
    for k, st in ipairs(s.steps) do
      if st <= cut then
        local n = #t.steps + 1
        t.steps[n], t.losses[n], t.mean[n] = st, s.losses[k], s.mean[k]
        t.tokens[n] = s.tokens and s.tokens[k] or st * run.tokens_per_step
      end
    end
    if #t.steps > 0 then
      copy.sets[name] = t
      copy.set_names[#copy.set_names + 1] = name
    end
  end
  return copy
end

-- Fit one parameter with one form (the other two held constant: they are fitted apart).
local function fit_one(run, set, p, form, upto, from, unit)
  local forms = { a0 = "constant", a1 = "constant", a2 = "constant" }
  forms[p] = form
  local ok, m = pcall(tsl.fit_temporal, run, { set = set, fit_until = upto, fit_from = from, forms = forms, unit = unit })
  if not ok then return nil, m end
  for _, v in ipairs(m.forms[p].p) do if v ~= v then return nil, "NaN parameter" end end
  return m
end

local function key_of(forms) return forms.a0 .. "/" .. forms.a1 .. "/" .. forms.a2 end

-- The checkpoints of `set` in [from, cut], split into a fitted part and a held-out part.
local function split_window(s, set, from, cut, holdout)
  local window = {}
  for k, st in ipairs(s.steps) do if st >= from then window[#window + 1] = k end end
  if not (type(holdout) == "number" and holdout > 0 and holdout < 1) then
    fail("choose: holdout must be a fraction in (0, 1) (got %s)", tostring(holdout))
  end
  local n_fit = math.floor((1 - holdout) * #window + 0.5)
  local n_val = #window - n_fit
  if n_fit < 5 or n_val < 1 then
    fail("choose: %d checkpoints of set '%s' lie in steps %d..%d; a held-out choice needs at least 5 to fit and 1 to score " ..
      "(evaluate more often or move the cut later)", #window, set, from, cut)
  end
  local val_steps, val_loss = {}, {}
  for i = n_fit + 1, #window do
    val_steps[#val_steps + 1], val_loss[#val_loss + 1] = s.steps[window[i]], s.mean[window[i]]
  end
  return s.steps[window[n_fit]], val_steps, val_loss, n_fit, n_val
end

-- The candidate forms of each parameter ("lr" and "cosine" only when the LR is known).
local function candidate_lists(candidates, has_lr)
  local cands = {}
  for _, p in ipairs(PARAMS) do
    local list = candidates and (candidates[p] or candidates) or M.candidates
    cands[p] = {}
    for _, form in ipairs(list) do
      if type(form) ~= "string" or not tsl.forms[form] then
        fail("choose: candidate form '%s' for %s is not a built-in form", tostring(form), p)
      end
      if (form ~= "lr" and form ~= "cosine") or has_lr then cands[p][#cands[p] + 1] = form end
    end
  end
  return cands
end

-- Every combination of fitted forms scored by the MSE of the predicted average loss on the
-- held-out checkpoints, best first (ties by name, so the order is deterministic).
local function score_combinations(cands, fitted, val_steps, val_loss)
  local scores = {}
  for _, f0 in ipairs(cands.a0) do for _, f1 in ipairs(cands.a1) do for _, f2 in ipairs(cands.a2) do
    local m0, m1, m2 = fitted.a0[f0], fitted.a1[f1], fitted.a2[f2]
    if m0 and m1 and m2 then
      local model = {}
      for k, v in pairs(m0) do model[k] = v end
      model.forms = { a0 = m0.forms.a0, a1 = m1.forms.a1, a2 = m2.forms.a2 }
      local se = 0
      for i, st in ipairs(val_steps) do se = se + (tsl.predict(model, st).loss - val_loss[i]) ^ 2 end
      local mse = se / #val_steps
      if mse == mse then
        local forms = { a0 = f0, a1 = f1, a2 = f2 }
        scores[#scores + 1] = { forms = forms, key = key_of(forms), mse = mse }
      end
    end
  end end end
  table.sort(scores, function(a, b)
    if a.mse ~= b.mse then return a.mse < b.mse end
    return a.key < b.key
  end)
  return scores
end

-- choose(run, {set=, cut=, fit_from=, holdout=0.25, candidates=, unit=}) ->
--   {forms=, model=, scores={{forms=, key=, mse=}, ...} (best first), cut=, inner_cut=, n_fit=, n_val=}
--   candidates: a list of form names for every parameter, or {a0 = {...}, a1 = {...}, a2 = {...}}
--   (default: every built-in form; "lr" and "cosine" only when the run's LR is known).
function M.choose(run, opts)
  opts = opts or {}
  if type(run) ~= "table" or not run.sets then fail("choose: expected a run from tsl.read_run") end
  local cut = resolve_cut(opts.cut or 1.0, run, "cut")
  local set = opts.set or run.set_names[1]
  if not run.sets[set] then fail("choose: the run has no evaluation set '%s'", tostring(set)) end
  local before = M.truncate(run, cut)
  local s = before.sets[set]
  if not s then fail("choose: set '%s' has no checkpoint at or before step %d", set, cut) end
  local from = math.max(opts.fit_from or run.peak_step or 1, 1)
  local inner_cut, val_steps, val_loss, n_fit, n_val = split_window(s, set, from, cut, opts.holdout or M.holdout)
  local cands = candidate_lists(opts.candidates, before.lr ~= nil)
  -- Each parameter's forms are fitted once; a combination only recombines them.
  local fitted = {}
  for _, p in ipairs(PARAMS) do
    fitted[p] = {}
    for _, form in ipairs(cands[p]) do fitted[p][form] = fit_one(before, set, p, form, inner_cut, from, opts.unit) end
  end
  local scores = score_combinations(cands, fitted, val_steps, val_loss)
  if #scores == 0 then fail("choose: no combination of candidate forms could be fitted on steps %d..%d of set '%s'", from, inner_cut, set) end
  local best = scores[1].forms
  local model = tsl.fit_temporal(before, { set = set, fit_until = cut, fit_from = from, forms = best, unit = opts.unit })
  return { forms = best, model = model, scores = scores, cut = cut, inner_cut = inner_cut, fit_from = from,
           n_fit = n_fit, n_val = n_val, set = set }
end

return M
