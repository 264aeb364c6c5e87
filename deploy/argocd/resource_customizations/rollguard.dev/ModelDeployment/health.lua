-- Argo CD health of a rollguard.dev ModelDeployment (Lua 5.1, as Argo CD runs it).
-- Not observed yet -> Progressing; Progressing, RollingBack -> Progressing; Paused, or a
-- rollout held because its metrics cannot be read -> Suspended; Degraded -> Degraded with
-- the rollback's trigger, value and threshold; Healthy -> Healthy.
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

local function rollback_words(r)
  if r == nil then
    return ""
  end
  local words = "revision " .. tostring(r.fromRevision) .. " rolled back to " .. tostring(r.toRevision)
  words = words .. " (" .. tostring(r.trigger)
  if r.triggerName ~= nil then
    words = words .. " " .. r.triggerName
  end
  if r.value ~= nil and r.threshold ~= nil then
    words = words .. ": value " .. tostring(r.value) .. ", threshold " .. tostring(r.threshold)
  end
  return words .. "): "
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for rollguard to reconcile the ModelDeployment"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for rollguard to observe generation " .. tostring(generation)
  return hs
end

local message = status.message or ""
local ready = condition(status, "Ready")
local phase = status.phase
if ready ~= nil and ready.reason == "MetricsHold" then
  local metrics = condition(status, "MetricsAvailable")
  hs.status = "Suspended"
  hs.message = "Rollout held, metrics unavailable: " .. ((metrics and metrics.message) or message)
elseif phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = message
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message
elseif phase == "Progressing" or phase == "RollingBack" then
  hs.status = "Progressing"
  hs.message = message
elseif phase == "Degraded" or phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = rollback_words(status.lastRollback) .. message
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase) .. ": " .. message
end
return hs
