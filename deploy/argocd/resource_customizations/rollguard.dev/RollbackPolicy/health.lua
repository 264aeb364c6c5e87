-- Argo CD health of a rollguard.dev RollbackPolicy (Lua 5.1, as Argo CD runs it).
-- Not observed yet -> Progressing; Valid=True -> Healthy; Valid=False -> Degraded with the
-- trigger that cannot be evaluated.
local hs = {}
local status = obj.status
local generation = obj.metadata.generation
if status == nil or (generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation)) then
  hs.status = "Progressing"
  hs.message = "Waiting for rollguard to check the RollbackPolicy"
  return hs
end
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Valid" then
      if c.status == "True" then
        hs.status = "Healthy"
      else
        hs.status = "Degraded"
      end
      hs.message = c.message or ""
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = "Waiting for rollguard to check the RollbackPolicy"
return hs
