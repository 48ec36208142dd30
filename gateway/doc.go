// Package gateway is SecureExec's HTTP face: the router, the middleware, the handlers, the
// one place where errors become HTTP statuses, and the composition of 402 responses from
// the offers of every enabled payment rail.
//
// Every call to /exec/tool and /exec/simulate takes the same path (exec.go):
// decode -> validate -> price -> pay -> IAM -> run -> seal -> audit -> respond.
package gateway
