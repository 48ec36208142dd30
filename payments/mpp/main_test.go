package mpp

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server, client connection and child process a test starts is gone when it ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
