// Package chain is the go-ethereum wiring the payment rails share: a transaction Sender with
// its own nonce manager and EIP-1559 fees, receipt polling whose timeout means "pending" and
// never "failed", deployment of the project's contracts (TestUSDC, SettlementBatcher) to any
// chain, helpers that read EIP-3009 state and check settlement receipts, and DevChain, the
// in-process simulated chain used by `secureexec dev` and the tests.
//
// Nothing here knows about HTTP or x402 wire formats; payments/x402 builds authorizations and
// hands them to this package as Authorization values. DevChain is a test chain with no real
// money: its keys are derived from public strings and must never hold value anywhere.
package chain
