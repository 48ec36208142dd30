//go:build !unix

package segspool

import (
	"fmt"
	"os"
)

// lockDir opens path, the spool's lock file. Without flock, nothing stops a second process:
// the gateway is built and run on unix systems.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: lock: %w", err)
	}
	return f, nil
}
