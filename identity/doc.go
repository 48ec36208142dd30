// Package identity is the gateway's IAM stage: who is calling and may they run this tool now.
// It combines three checks into one Outcome that becomes part of the proof record:
//
//  1. ERC-8004 resolution (a Resolver; the on-chain implementation arrives in a later issue,
//     until then the self-asserted agent id is used as is),
//  2. local policy (Policy: deny-listed agents, per-agent tool allow-lists, whether real
//     execution is allowed, a price cap), evaluated first and cheaply,
//  3. the external EP validator (EPClient, POST /ep/validate; see shared/protocols/ep.md),
//     under a hard deadline, a circuit breaker and an explicit fail-open or fail-closed mode.
//
// EP is unauthenticated and its proof hash is unverifiable, so its answer is advisory input
// recorded truthfully: an Outcome never says "approved" by EP when EP did not answer.
package identity
