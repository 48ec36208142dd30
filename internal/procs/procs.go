// Package procs chooses how many threads run the gateway's Go code at once (GOMAXPROCS).
//
// On a small machine the gateway shares its cores with its own Postgres, and in the load
// benchmark with the load generator. With one thread per core, a goroutine that becomes
// ready waits whenever the kernel runs those processes on both cores; with more threads than
// cores, another of the gateway's threads is usually running and takes it. On 2 cores, 8
// threads cut the p99 of POST /exec/simulate from 10.9–14.0 ms to 7.6–10.0 ms at the same
// throughput, and 16 did worse (docs/PERFORMANCE.md).
package procs

import (
	"os"
	"runtime"
)

// Min is the fewest threads the gateway's processes run Go code on.
const Min = 8

// Raise sets GOMAXPROCS to Min when the runtime chose fewer (a machine with fewer cores) and
// the GOMAXPROCS environment variable does not say otherwise, and returns the value in effect.
func Raise() int {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < Min {
		runtime.GOMAXPROCS(Min)
	}
	return runtime.GOMAXPROCS(0)
}
