package exec

import "fmt"

// Admissible reports whether a call could run at all in the given mode, without running
// it: the tool exists, is not blocked, and allows real mode if asked for. The gateway asks
// before taking payment, so that a call that can never run is never charged.
func (r *Runner) Admissible(tool string, dryRun bool) error {
	t, err := r.reg.Lookup(tool)
	if err != nil {
		return err
	}
	if !dryRun && isDryRunOnly(t) {
		return fmt.Errorf("%w: %s can only be simulated", ErrDryRunOnly, tool)
	}
	return nil
}
