//go:build race

package exec

// timingFactor stretches the time bounds of the tests that prove a tool stops at its
// deadline: the race detector runs this code 5 to 20 times slower. Each bound still sits
// far below what the same test measured without the fix it guards (seconds to hours), and
// `make test` also runs this package without the race detector, at the tight bounds.
const timingFactor = 20
