// Package exec is the sandbox: the registry of the ten allowed tools, the list of blocked
// ones, argument validation against each tool's JSON Schema, and the runner that executes a
// tool under limits (deadline, output size, concurrency) so that a slow, failing or panicking
// tool becomes a result, never a crash.
//
// Every tool works in two modes. Dry-run (the default) validates the arguments and describes
// what would happen without any side effect; real mode performs the work. Tools never see the
// network except through the SSRF-safe client in ssrf.go.
package exec
