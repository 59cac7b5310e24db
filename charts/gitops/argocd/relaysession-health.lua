-- Argo CD health of a RelaySession (trickle-relay.io/v1alpha1), from the status the operator writes:
--   phase Succeeded (the input stream ended)          -> Healthy
--   phase Failed or Degraded                          -> Degraded (message: the Ready condition's)
--   condition Ready=True (phase Running)              -> Healthy
--   no status yet, observedGeneration < generation,   -> Progressing
--     Pending, Starting, Connecting
local hs = { status = "Progressing", message = "Waiting for the operator to report" }
if obj.status == nil then
  return hs
end
local status = obj.status
local phase = status.phase or ""

local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
local function readyText(fallback)
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  if ready ~= nil and ready.reason ~= nil and ready.reason ~= "" then
    return ready.reason
  end
  return fallback
end

local generation = obj.metadata and obj.metadata.generation or nil
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "The operator has not seen generation " .. tostring(generation) .. " yet"
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = readyText("The session ended because its input stream ended")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = readyText("The session failed")
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = readyText("The relay report is stale or WebRTC dropped")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = readyText("Relaying")
elseif phase ~= "" then
  hs.message = phase .. ": " .. readyText("starting")
end
return hs
