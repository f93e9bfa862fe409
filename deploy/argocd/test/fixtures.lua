-- Fixtures for the Argo CD health checks in deploy/argocd/health-checks.yaml: live objects as
-- the operator leaves them, one per phase and condition reason it writes (run.lua fails when the
-- operator's sources name a phase or reason no fixture of that kind has), each with the health
-- Argo CD must show and text its message must contain.
--
-- Reasons and messages follow operator/src/mesh/status.rs, operator/src/flround/{plan,status}.rs
-- and operator/src/chaos/{plan,measure,blast_radius}.rs; every condition carries the generation
-- it was written for, as condition::set_all writes it.
--
-- Each case: name, expect (Healthy, Progressing, Degraded, Suspended), message (substrings, in
-- any order), object.

local T = "2025-06-01T10:00:00Z"

-- Conditions written for `generation`: {type, status, reason, message} each.
local function conditions(generation, list)
  local out = {}
  for _, c in ipairs(list) do
    out[#out + 1] = {
      type = c[1],
      status = c[2],
      reason = c[3],
      message = c[4],
      lastTransitionTime = T,
      observedGeneration = generation,
    }
  end
  return out
end

local function object(kind, name, generation, spec, status)
  return {
    apiVersion = "x0tta6bl4.io/v1alpha1",
    kind = kind,
    metadata = {
      name = name,
      namespace = "x0",
      uid = "0b9d7c1e-" .. name,
      generation = generation,
      creationTimestamp = T,
    },
    spec = spec,
    status = status,
  }
end

------------------------------------------------------------------------------------------------
-- MeshNetwork (operator/src/mesh/status.rs: compute and invalid)

local MESH_SPEC = {
  nodeSelector = { ["x0tta6bl4.io/mesh"] = "demo" },
  postQuantum = { mode = "required" },
}

local function mesh(generation, status)
  return object("MeshNetwork", "demo", generation, MESH_SPEC, status)
end

-- The status compute writes for generation g: the DaemonSet's counts and the four conditions.
local function meshStatus(g, desired, ready, updated, list)
  return {
    observedGeneration = g,
    conditions = conditions(g, list),
    desiredNodes = desired,
    readyNodes = ready,
    updatedNodes = updated,
    reportingNodes = ready,
    readyNodesText = ready .. "/" .. desired,
    postQuantum = "required:X25519MLKEM768/ML-DSA-65",
    configHash = "5f0c3a9e",
  }
end

local meshCases = {
  {
    name = "created, no status yet",
    expect = "Progressing",
    message = { "Waiting for the operator to observe generation 1" },
    object = mesh(1, nil),
  },
  {
    name = "ready and converged, then the spec changed (status of generation 2, object at 3)",
    expect = "Progressing",
    message = { "observe generation 3" },
    object = mesh(3, meshStatus(2, 3, 3, 3, {
      { "Ready", "True", "AllNodesReady", "3/3 agents ready" },
      { "Progressing", "False", "RolloutComplete", "3/3 agents run the current spec" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "True", "AllRoutesKnown", "each of 3 agents has a route to the other 2" },
    })),
  },
  {
    name = "DaemonSet not picked up yet (Applying)",
    expect = "Progressing",
    message = { "Applying", "waiting for the DaemonSet controller" },
    object = mesh(1, meshStatus(1, 0, 0, 0, {
      { "Ready", "False", "Applying", "waiting for the DaemonSet controller to pick up the agent DaemonSet" },
      { "Progressing", "True", "RollingOut", "0/0 agents updated, 0 ready" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "Unknown", "AwaitingAgentReports", "0/0 agents published a MeshNode record" },
    })),
  },
  {
    name = "no node matches (NoNodes): Degraded, not Progressing forever",
    expect = "Degraded",
    message = { "NoNodes", "no node matches spec.nodeSelector" },
    object = mesh(1, meshStatus(1, 0, 0, 0, {
      { "Ready", "False", "NoNodes", "no node matches spec.nodeSelector and tolerates the agent" },
      { "Progressing", "False", "RolloutComplete", "0/0 agents run the current spec" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "Unknown", "AwaitingAgentReports", "0/0 agents published a MeshNode record" },
    })),
  },
  {
    name = "agents rolling out (AgentsNotReady, RollingOut)",
    expect = "Progressing",
    message = { "AgentsNotReady", "1/3 agents ready, 2 updated" },
    object = mesh(1, meshStatus(1, 3, 1, 2, {
      { "Ready", "False", "AgentsNotReady", "1/3 agents ready, 2 updated" },
      { "Progressing", "True", "RollingOut", "2/3 agents updated, 1 ready" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "False", "PartialReachability", "1 of 1 agents lack routes; 0% of agent pairs reachable" },
    })),
  },
  {
    name = "ready, no agent has reported yet (Converged Unknown): not Healthy",
    expect = "Progressing",
    message = { "not converged", "AwaitingAgentReports", "0/3 agents published a MeshNode record" },
    object = mesh(1, meshStatus(1, 3, 3, 3, {
      { "Ready", "True", "AllNodesReady", "3/3 agents ready" },
      { "Progressing", "False", "RolloutComplete", "3/3 agents run the current spec" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "Unknown", "AwaitingAgentReports", "0/3 agents published a MeshNode record" },
    })),
  },
  {
    name = "ready, some agents still to report (Converged False, AwaitingAgentReports)",
    expect = "Progressing",
    message = { "not converged", "2/3 agents report; those reporting reach each other" },
    object = mesh(1, meshStatus(1, 3, 3, 3, {
      { "Ready", "True", "AllNodesReady", "3/3 agents ready" },
      { "Progressing", "False", "RolloutComplete", "3/3 agents run the current spec" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "False", "AwaitingAgentReports", "2/3 agents report; those reporting reach each other" },
    })),
  },
  {
    name = "ready but not converged (PartialReachability): not Healthy",
    expect = "Progressing",
    message = { "not converged", "PartialReachability", "2 of 4 agents lack routes; 66% of agent pairs reachable" },
    object = mesh(1, meshStatus(1, 4, 4, 4, {
      { "Ready", "True", "AllNodesReady", "4/4 agents ready" },
      { "Progressing", "False", "RolloutComplete", "4/4 agents run the current spec" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "False", "PartialReachability", "2 of 4 agents lack routes; 66% of agent pairs reachable" },
    })),
  },
  {
    name = "ready and converged",
    expect = "Healthy",
    message = { "3/3 agents ready", "each of 3 agents has a route to the other 2" },
    object = mesh(2, meshStatus(2, 3, 3, 3, {
      { "Ready", "True", "AllNodesReady", "3/3 agents ready" },
      { "Progressing", "False", "RolloutComplete", "3/3 agents run the current spec" },
      { "Degraded", "False", "AsExpected", "no agent of the current spec is unavailable" },
      { "Converged", "True", "AllRoutesKnown", "each of 3 agents has a route to the other 2" },
    })),
  },
  {
    name = "was ready, agents went down (AgentsUnavailable)",
    expect = "Degraded",
    message = { "AgentsUnavailable", "2 of 3 agents unavailable" },
    object = mesh(1, meshStatus(1, 3, 1, 3, {
      { "Ready", "False", "AgentsNotReady", "1/3 agents ready, 3 updated" },
      { "Progressing", "True", "RollingOut", "3/3 agents updated, 1 ready" },
      { "Degraded", "True", "AgentsUnavailable", "2 of 3 agents unavailable" },
      { "Converged", "False", "PartialReachability", "1 of 1 agents lack routes; 0% of agent pairs reachable" },
    })),
  },
  {
    name = "invalid spec (InvalidSpec), with the Converged condition of an older generation left over",
    expect = "Degraded",
    message = { "InvalidSpec", "spec.agent.image: not a valid image reference" },
    object = (function()
      local status = meshStatus(4, 3, 3, 3, {
        { "Ready", "False", "InvalidSpec", "spec.agent.image: not a valid image reference" },
        { "Progressing", "False", "InvalidSpec", "nothing is rolled out until the spec is fixed" },
        { "Degraded", "True", "InvalidSpec", "spec.agent.image: not a valid image reference" },
      })
      table.insert(status.conditions, conditions(3, {
        { "Converged", "True", "AllRoutesKnown", "each of 3 agents has a route to the other 2" },
      })[1])
      return mesh(4, status)
    end)(),
  },
}

------------------------------------------------------------------------------------------------
-- FLTrainingRound (operator/src/flround/plan.rs and status.rs)

local FL_SPEC = {
  meshRef = { name = "demo" },
  model = { kind = "logisticRegression", inputDim = 64, classes = 10, dataset = "digits" },
  rounds = 3,
  participants = { minimum = 5 },
  aggregation = { rule = "multiKrum", byzantine = 1 },
}

local function flround(generation, status)
  return object("FLTrainingRound", "demo-round", generation, FL_SPEC, status)
end

local function flStatus(g, phase, completed, list, extra)
  local status = {
    observedGeneration = g,
    phase = phase,
    completedRounds = completed,
    roundText = completed .. "/3",
    conditions = conditions(g, list),
  }
  for k, v in pairs(extra or {}) do
    status[k] = v
  end
  return status
end

local RUNNING = {
  participants = { "n0", "n1", "n2", "n3", "n4" },
  aggregator = "n0",
}

local function waiting(reason, message)
  return {
    { "Ready", "False", reason, message },
    { "Progressing", "False", reason, message },
    { "Degraded", "True", reason, message },
  }
end

local flCases = {
  {
    name = "created, no status yet",
    expect = "Progressing",
    message = { "Waiting for the operator to observe generation 1" },
    object = flround(1, nil),
  },
  {
    name = "refused spec fixed by the user (status of generation 1, object at 2)",
    expect = "Progressing",
    message = { "observe generation 2" },
    object = flround(2, flStatus(1, "Failed", 0,
      waiting("InvalidSpec", "spec.rounds: must be at least 1"))),
  },
  {
    name = "Pending: MeshNetwork not found (ReferenceNotFound)",
    expect = "Degraded",
    message = { "Pending", "ReferenceNotFound", "MeshNetwork demo not found in namespace x0" },
    object = flround(1, flStatus(1, "Pending", 0,
      waiting("ReferenceNotFound", "MeshNetwork demo not found in namespace x0"))),
  },
  {
    name = "Pending: too few participants (InsufficientParticipants)",
    expect = "Degraded",
    message = { "InsufficientParticipants", "3 live agents match spec.participants, spec.participants.minimum is 5" },
    object = flround(1, flStatus(1, "Pending", 0,
      waiting("InsufficientParticipants", "3 live agents match spec.participants, spec.participants.minimum is 5"))),
  },
  {
    name = "Pending: Krum cannot hold (RuleCannotHold)",
    expect = "Degraded",
    message = { "RuleCannotHold", "spec.aggregation.rule multiKrum with spec.aggregation.byzantine 1 needs 5 participants, 4 available" },
    object = flround(1, flStatus(1, "Pending", 0,
      waiting("RuleCannotHold", "spec.aggregation.rule multiKrum with spec.aggregation.byzantine 1 needs 5 participants, 4 available"))),
  },
  {
    name = "Running: first round training",
    expect = "Progressing",
    message = { "Running", "round 1 of 3, 5 participants, aggregated by n0", "round 0/3" },
    object = flround(1, flStatus(1, "Running", 0, {
      { "Ready", "False", "Running", "round 1 of 3, 5 participants, aggregated by n0" },
      { "Progressing", "True", "Training", "round 1 of 3, 5 participants, aggregated by n0" },
      { "Degraded", "False", "AsExpected", "the aggregator reports" },
    }, RUNNING)),
  },
  {
    name = "Running: a round sealed, with its accuracy",
    expect = "Progressing",
    message = { "round 2 of 3", "round 1/3, accuracy 0.8314" },
    object = flround(1, flStatus(1, "Running", 1, {
      { "Ready", "False", "Running", "round 2 of 3, 5 participants, aggregated by n0" },
      { "Progressing", "True", "Training", "round 2 of 3, 5 participants, aggregated by n0" },
      { "Degraded", "False", "AsExpected", "the aggregator reports" },
    }, { participants = RUNNING.participants, aggregator = "n0", accuracy = "0.8314", accepted = 4, rejected = 1 })),
  },
  {
    name = "Running: the aggregator is lost (AggregatorLost)",
    expect = "Degraded",
    message = { "AggregatorLost", "the aggregator n0 has not reported and no live participant can take over" },
    object = flround(1, flStatus(1, "Running", 1, {
      { "Ready", "False", "Running", "round 2 of 3, 5 participants, aggregated by n0" },
      { "Progressing", "True", "Training", "round 2 of 3, 5 participants, aggregated by n0" },
      { "Degraded", "True", "AggregatorLost",
        "the aggregator n0 has not reported and no live participant can take over; rounds resume when one reports" },
    }, RUNNING)),
  },
  {
    name = "Completed",
    expect = "Healthy",
    message = { "Completed", "3 rounds, final accuracy 0.9321" },
    object = flround(1, flStatus(1, "Completed", 3, {
      { "Ready", "True", "Completed", "3 rounds, final accuracy 0.9321, model demo-round-model (chain head 9f2c41d0)" },
      { "Progressing", "False", "Completed", "every round is done" },
      { "Degraded", "False", "AsExpected", "every round is done" },
    }, { participants = RUNNING.participants, aggregator = "n0", accuracy = "0.9321" })),
  },
  {
    name = "Failed: a round failed (RoundFailed)",
    expect = "Degraded",
    message = { "Failed", "RoundFailed", "round 2 failed: only 2 updates accepted, the quorum is 3" },
    object = flround(1, flStatus(1, "Failed", 1,
      (function()
        local m = "round 2 failed: only 2 updates accepted, the quorum is 3"
        return {
          { "Ready", "False", "RoundFailed", m },
          { "Progressing", "False", "RoundFailed", m },
          { "Degraded", "True", "RoundFailed", m },
        }
      end)(), RUNNING)),
  },
  {
    name = "Failed: spec refused (InvalidSpec)",
    expect = "Degraded",
    message = { "InvalidSpec", "spec.participants.selector: key \"bad key\" is not a valid label key" },
    object = flround(1, flStatus(1, "Failed", 0,
      waiting("InvalidSpec", "spec.participants.selector: key \"bad key\" is not a valid label key"))),
  },
}

------------------------------------------------------------------------------------------------
-- ChaosExperiment (operator/src/chaos/plan.rs, measure.rs, blast_radius.rs)

local CHAOS_SPEC = {
  target = { meshRef = { name = "demo" }, mode = "one" },
  action = { type = "partition", direction = "both" },
  duration = "30s",
  expectations = { maxTimeToDetect = "3s", maxTimeToRecover = "10s", minReachablePercent = 100 },
}

local function chaos(generation, status, spec)
  return object("ChaosExperiment", "partition-one", generation, spec or CHAOS_SPEC, status)
end

local function chaosStatus(g, phase, list, extra)
  local status = {
    observedGeneration = g,
    phase = phase,
    conditions = conditions(g, list),
  }
  for k, v in pairs(extra or {}) do
    status[k] = v
  end
  return status
end

-- plan.rs waiting(): Progressing, nothing wrong with the experiment.
local function chaosWaiting(reason, message)
  return {
    { "Ready", "False", reason, message },
    { "Progressing", "True", reason, message },
    { "Degraded", "False", "AsExpected", "nothing has gone wrong; the experiment waits" },
  }
end

-- plan.rs refused(): Failed until the spec changes.
local function chaosRefused(reason, message)
  return {
    { "Ready", "False", reason, message },
    { "Progressing", "False", reason, "nothing is injected until the spec changes" },
    { "Degraded", "True", reason, message },
  }
end

-- plan.rs running(): injected or recovering, aborted or not.
local function chaosRunning(reason, message, aborted)
  local degraded = { "Degraded", "False", "AsExpected", "no abort guard was crossed" }
  if aborted ~= nil then
    degraded = { "Degraded", "True", "Aborted", aborted }
  end
  return {
    { "Ready", "False", reason, message },
    { "Progressing", "True", reason, message },
    degraded,
  }
end

local INJECTED = {
  targets = { "n1" },
  injectedAt = "2025-06-01T10:00:00.000000Z",
  deadline = "2025-06-01T10:00:30.000000Z",
  assignments = { { node = "n1", entries = { { peer = "n0" }, { peer = "n2" } } } },
}

local function with(base, extra)
  local out = {}
  for k, v in pairs(base) do
    out[k] = v
  end
  for k, v in pairs(extra) do
    out[k] = v
  end
  return out
end

local REVERTED = with(INJECTED, {
  injectedFor = "30s",
  revertedAt = "2025-06-01T10:00:30.000000Z",
  revertCause = "duration",
  timeToDetect = "1.204s",
  detectedBy = "n0",
  timeToRecover = "3.611s",
  reachablePercent = 100,
})

local PASSED_MESSAGE =
  "detected after 1.204s by n0; recovered after 3.611s; 100% of pairs of untargeted agents reachable at the end of the fault"

local function judged(verdictReason, message, degraded)
  local done = { "Progressing", "False", "Completed", "the fault was reverted and the experiment judged" }
  if verdictReason == "Passed" then
    return {
      { "Ready", "True", "Passed", message },
      done,
      degraded or { "Degraded", "False", "AsExpected", "the experiment passed and the mesh converged again" },
    }
  end
  return {
    { "Ready", "False", verdictReason, message },
    done,
    { "Degraded", "True", verdictReason, message },
  }
end

local DRY_RUN_SPEC = with(CHAOS_SPEC, { dryRun = true })
local DRY_RUN_MESSAGE =
  "dry run of partition (both) for 30s: 1 of 3 candidates would be targeted (n1: 2 entries); blast radius: ok (1 of 3 live agents targeted (33%), spec.blastRadius.maxTargetPercent is 50); disconnect: ok (the 2 untargeted agents stay connected without the targets); mesh converged: yes; kill switch: off"

local chaosCases = {
  {
    name = "created, no status yet",
    expect = "Progressing",
    message = { "Waiting for the operator to observe generation 1" },
    object = chaos(1, nil),
  },
  {
    name = "Pending, spec changed since (status of generation 1, object at 2)",
    expect = "Progressing",
    message = { "observe generation 2" },
    object = chaos(2, chaosStatus(1, "Pending",
      chaosWaiting("MeshUnhealthy", "the mesh must be converged before a fault is injected: Converged is not reported yet"))),
  },
  {
    name = "Pending: MeshNetwork not found (ReferenceNotFound) waits, with the cause",
    expect = "Progressing",
    message = { "Pending", "ReferenceNotFound", "MeshNetwork demo not found in namespace x0" },
    object = chaos(1, chaosStatus(1, "Pending",
      chaosWaiting("ReferenceNotFound", "MeshNetwork demo not found in namespace x0"))),
  },
  {
    name = "Pending with Degraded True: Degraded, not hidden behind the phase",
    expect = "Degraded",
    message = { "ReferenceNotFound", "MeshNetwork demo not found in namespace x0" },
    object = chaos(1, chaosStatus(1, "Pending", {
      { "Ready", "False", "ReferenceNotFound", "MeshNetwork demo not found in namespace x0" },
      { "Progressing", "False", "ReferenceNotFound", "MeshNetwork demo not found in namespace x0" },
      { "Degraded", "True", "ReferenceNotFound", "MeshNetwork demo not found in namespace x0" },
    })),
  },
  {
    name = "Pending: the mesh's kill switch is on (MeshChaosPaused)",
    expect = "Suspended",
    message = { "MeshChaosPaused", "spec.chaos.paused true (the kill switch)" },
    object = chaos(1, chaosStatus(1, "Pending", chaosWaiting("MeshChaosPaused",
      "MeshNetwork demo has spec.chaos.paused true (the kill switch): nothing is injected until it is false"))),
  },
  {
    name = "Pending: the mesh is not converged (MeshUnhealthy)",
    expect = "Progressing",
    message = { "MeshUnhealthy", "the mesh must be converged before a fault is injected: Converged is False" },
    object = chaos(1, chaosStatus(1, "Pending", chaosWaiting("MeshUnhealthy",
      "the mesh must be converged before a fault is injected: Converged is False (PartialReachability: 1 of 3 agents lack routes; 66% of agent pairs reachable)"))),
  },
  {
    name = "Pending: no live agent matches spec.target (NoCandidates)",
    expect = "Progressing",
    message = { "NoCandidates", "no live agent of MeshNetwork demo matches spec.target" },
    object = chaos(1, chaosStatus(1, "Pending", chaosWaiting("NoCandidates",
      "no live agent of MeshNetwork demo matches spec.target"))),
  },
  {
    name = "Pending: a byzantineUpdate waits for its job to run (RoundNotRunning)",
    expect = "Progressing",
    message = { "RoundNotRunning", "waiting for FLTrainingRound job to run" },
    object = chaos(1, chaosStatus(1, "Pending", chaosWaiting("RoundNotRunning",
      "waiting for FLTrainingRound job to run (it is Pending)"))),
  },
  {
    name = "Pending: a target is busy with another experiment (TargetBusy)",
    expect = "Progressing",
    message = { "TargetBusy", "n1 also targeted by experiment loss-one, which is injecting" },
    object = chaos(1, chaosStatus(1, "Pending", chaosWaiting("TargetBusy",
      "n1 also targeted by experiment loss-one, which is injecting; one experiment at a time per node"))),
  },
  {
    name = "Injecting, detected so far",
    expect = "Progressing",
    message = { "Injecting: partition (both) injected into n1 until", "detected in 1.204s" },
    object = chaos(1, chaosStatus(1, "Injecting", chaosRunning("Injecting",
      "partition (both) injected into n1 until 2025-06-01T10:00:30Z"),
      with(INJECTED, { timeToDetect = "1.204s", detectedBy = "n0" }))),
  },
  {
    name = "Suspended mid-window (spec.suspend)",
    expect = "Suspended",
    message = { "spec.suspend is true: the fault is reverted; 12.5s of the window remain" },
    object = chaos(2, chaosStatus(2, "Suspended", chaosRunning("Suspended",
      "spec.suspend is true: the fault is reverted; 12.5s of the window remain"),
      { targets = { "n1" }, remaining = "12.5s", injectedFor = "17.5s", revertCause = "suspend",
        revertedAt = "2025-06-01T10:00:17.500000Z" }), with(CHAOS_SPEC, { suspend = true })),
  },
  {
    name = "Recovering after the window closed",
    expect = "Progressing",
    message = { "Recovering", "the window closed at", "recovered in 3.611s" },
    object = chaos(1, chaosStatus(1, "Recovering", chaosRunning("Recovering",
      "the window closed at 2025-06-01T10:00:30Z after 30s injected; waiting for the targets to remove their entries and the mesh to converge"),
      REVERTED)),
  },
  {
    name = "Recovering after an abort guard (Aborted)",
    expect = "Degraded",
    message = { "Aborted", "aborted by abort.minReachablePercent: 40% of pairs" },
    object = chaos(1, chaosStatus(1, "Recovering", chaosRunning("Recovering",
      "the fault is reverted; waiting for the mesh to converge again",
      "aborted by abort.minReachablePercent: 40% of pairs of untargeted agents reachable 10s after injection, the limit is 50%"),
      with(REVERTED, { revertCause = "abort" }))),
  },
  {
    name = "Completed, verdict Passed",
    expect = "Healthy",
    message = { "Passed", PASSED_MESSAGE },
    object = chaos(1, chaosStatus(1, "Completed", judged("Passed", PASSED_MESSAGE),
      with(REVERTED, { verdict = "Passed", verdictMessage = PASSED_MESSAGE, timeToRestore = "2.1s" }))),
  },
  {
    name = "Completed Passed, spec edited afterwards: it ran once, the verdict stands",
    expect = "Healthy",
    message = { "Passed", "later spec changes are not applied" },
    object = chaos(3, chaosStatus(2, "Completed", judged("Passed", PASSED_MESSAGE),
      with(REVERTED, { verdict = "Passed", verdictMessage = PASSED_MESSAGE }))),
  },
  {
    name = "Completed Passed but the mesh did not converge again (NotRestored)",
    expect = "Degraded",
    message = { "NotRestored", "the mesh did not converge again within 2m" },
    object = (function()
      local why = "the mesh did not converge again within 2m of the revert (Converged is False (PartialReachability: 1 of 3 agents lack routes; 66% of agent pairs reachable))"
      local message = PASSED_MESSAGE .. "; " .. why
      return chaos(1, chaosStatus(1, "Completed",
        judged("Passed", message, { "Degraded", "True", "NotRestored", why }),
        with(REVERTED, { verdict = "Passed", verdictMessage = message })))
    end)(),
  },
  {
    name = "Completed, verdict Failed (ExpectationFailed)",
    expect = "Degraded",
    message = { "Failed", "timeToDetect 4.5s exceeds expectations.maxTimeToDetect 3s" },
    object = chaos(1, chaosStatus(1, "Completed",
      judged("ExpectationFailed", "timeToDetect 4.5s exceeds expectations.maxTimeToDetect 3s"),
      with(REVERTED, { timeToDetect = "4.5s", verdict = "Failed",
        verdictMessage = "timeToDetect 4.5s exceeds expectations.maxTimeToDetect 3s" }))),
  },
  {
    name = "Completed, verdict Failed after an abort (Aborted)",
    expect = "Degraded",
    message = { "Aborted", "aborted by abort.maxSilentAgents" },
    object = (function()
      local why = "aborted by abort.maxSilentAgents: 2 untargeted agents stopped reporting (n0, n2), the limit is 1"
      return chaos(1, chaosStatus(1, "Completed", judged("Aborted", why),
        with(REVERTED, { revertCause = "abort", verdict = "Failed", verdictMessage = why })))
    end)(),
  },
  {
    name = "Completed, verdict Inconclusive",
    expect = "Degraded",
    message = { "Inconclusive", "no target reported installing its fault entries" },
    object = chaos(1, chaosStatus(1, "Completed",
      judged("Inconclusive", "no target reported installing its fault entries"),
      with(REVERTED, { verdict = "Inconclusive", verdictMessage = "no target reported installing its fault entries" }))),
  },
  {
    name = "Completed dry run the guards allow (DryRun)",
    expect = "Healthy",
    message = { "DryRun", "dry run of partition (both) for 30s" },
    object = chaos(1, chaosStatus(1, "Completed", {
      { "Ready", "True", "DryRun", DRY_RUN_MESSAGE },
      { "Progressing", "False", "DryRun", "a dry run injects nothing" },
      { "Degraded", "False", "AsExpected", "the guards would allow the experiment" },
    }, { targets = { "n1" } }), DRY_RUN_SPEC),
  },
  {
    name = "Completed dry run with no candidate (NoCandidates)",
    expect = "Degraded",
    message = { "NoCandidates", "no live agent matches spec.target" },
    object = chaos(1, chaosStatus(1, "Completed", {
      { "Ready", "False", "DryRun", "dry run of partition (both) for 30s: 0 of 0 candidates would be targeted (none); blast radius: ok; disconnect: ok; mesh converged: yes; kill switch: off" },
      { "Progressing", "False", "DryRun", "a dry run injects nothing" },
      { "Degraded", "True", "NoCandidates", "no live agent matches spec.target" },
    }), DRY_RUN_SPEC),
  },
  {
    name = "Completed dry run the blast radius would refuse (BlastRadiusExceeded)",
    expect = "Degraded",
    message = { "BlastRadiusExceeded", "spec.blastRadius.maxTargetPercent is 30" },
    object = chaos(1, chaosStatus(1, "Completed", {
      { "Ready", "False", "DryRun", "dry run of partition (both) for 30s: 1 of 3 candidates would be targeted (n1: 2 entries); blast radius: refused (1 of 3 live agents targeted (33%), spec.blastRadius.maxTargetPercent is 30)" },
      { "Progressing", "False", "DryRun", "a dry run injects nothing" },
      { "Degraded", "True", "BlastRadiusExceeded", "1 of 3 live agents targeted (33%), spec.blastRadius.maxTargetPercent is 30" },
    }, { targets = { "n1" } }), DRY_RUN_SPEC),
  },
  {
    name = "Completed dry run, spec edited since: planned again",
    expect = "Progressing",
    message = { "observe generation 2" },
    object = chaos(2, chaosStatus(1, "Completed", {
      { "Ready", "True", "DryRun", DRY_RUN_MESSAGE },
      { "Progressing", "False", "DryRun", "a dry run injects nothing" },
      { "Degraded", "False", "AsExpected", "the guards would allow the experiment" },
    }, { targets = { "n1" } }), DRY_RUN_SPEC),
  },
  {
    name = "Failed: spec refused (InvalidSpec)",
    expect = "Degraded",
    message = { "InvalidSpec", "spec.duration: " },
    object = chaos(1, chaosStatus(1, "Failed", chaosRefused("InvalidSpec",
      "spec.duration: invalid duration \"30 parsecs\""))),
  },
  {
    name = "Failed: action not supported (Unsupported)",
    expect = "Degraded",
    message = { "Unsupported", "is not supported yet" },
    object = chaos(1, chaosStatus(1, "Failed", chaosRefused("Unsupported",
      "cpuStress is not supported yet: this release injects network and node faults (partition, loss, corrupt, latency, nodeKill)"))),
  },
  {
    name = "Failed: the job to attack had ended already (RoundEnded)",
    expect = "Degraded",
    message = { "RoundEnded", "there is no running job to attack" },
    object = chaos(1, chaosStatus(1, "Failed", chaosRefused("RoundEnded",
      "FLTrainingRound job is Completed: there is no running job to attack"))),
  },
  {
    name = "Failed: the blast radius refuses it (BlastRadiusExceeded)",
    expect = "Degraded",
    message = { "BlastRadiusExceeded", "the 2 untargeted agents split into 2 parts" },
    object = chaos(1, chaosStatus(1, "Failed", chaosRefused("BlastRadiusExceeded",
      "without n1 the 2 untargeted agents split into 2 parts: {n0}, {n2}; spec.blastRadius.allowDisconnect is false"))),
  },
}

local cases = {}
for _, list in ipairs({ meshCases, flCases, chaosCases }) do
  for _, case in ipairs(list) do
    cases[#cases + 1] = case
  end
end
return cases
