-- Argo CD health check for xw.dev/ModelInstance (contract: charts/xw-operator/argocd/health.lua).
-- Install it under argocd-cm `resource.customizations.health.xw.dev_ModelInstance` (docs/gitops.md).
--
-- Healthy      phase Ready: every replica serves. A ModelInstance scaled to zero (spec.replicas 0,
--              Ready reason ScaledToZero) is Healthy too: it is the state that was asked for, Argo CD
--              reports a Deployment with 0 replicas Healthy, and kstatus/Flux say Current. (Suspended
--              would turn the whole Application "Suspended" whenever an autoscaler parks a model.)
-- Progressing  no status yet, status.observedGeneration behind metadata.generation (the operator has
--              not rolled out the latest spec), phase Pending or Progressing.
-- Degraded     phase Degraded (unschedulable, image pull, crash loop, rollout deadline) or Failed (the
--              spec cannot be realised, e.g. an unknown chip): status.message says why and what to fix.
-- Written for gopher-lua (Lua 5.1, what Argo CD embeds); tested with Lua 5.4 through lupa as well.
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function message(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for xw-operator to report status"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for xw-operator to roll out generation " .. tostring(generation) .. ": " ..
    message(status, "")
  return hs
end

local phase = status.phase
if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. message(status, "see the ModelInstance's conditions")
  return hs
end

if phase == "Ready" then
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
    hs.message = message(status, "Ready")
    return hs
  end
end

hs.status = "Progressing"
hs.message = phase .. ": " .. message(status, "rolling out")
return hs
