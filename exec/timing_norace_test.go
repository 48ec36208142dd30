//go:build !race

package exec

// timingFactor: see timing_race_test.go.
const timingFactor = 1
