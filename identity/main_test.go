package identity

import (
	"testing"

	"go.uber.org/goleak"
)

// The EP client owns HTTP connections and every fake EP a server goroutine; none may outlive
// the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
