// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title X402Lens
/// @notice Never deployed. Its init code, with constructor arguments appended, is sent as an
/// eth_call without `to`: the constructor reads what x402 verification needs for many payments
/// of one token and returns the answers as if they were the contract's code, so one eth_call
/// answers many verifications on any node (geth, anvil, the simulated backend) with nothing
/// deployed anywhere.
///
/// Answer layout (all 32-byte words, big-endian), 32 + 160 * payers.length bytes:
///   word 0              extcodesize(token)
///   then per payer i, five words:
///     extcodesize(payers[i])
///     balanceOf status: 0 if the call reverted, else 1 + returndatasize
///     the first return word of token.balanceOf(payers[i]) (meaningful when status >= 33)
///     authorizationState status: 0 if the call reverted, else 1 + returndatasize
///     the first return word of token.authorizationState(payers[i], nonces[i]) (idem)
/// The first byte of the answer is 0 (a code size), never 0xEF (EIP-3541), and the caller keeps
/// payers.length small enough for the 24,576-byte code limit (EIP-170): at most 153.
contract X402Lens {
    constructor(address token, address[] memory payers, bytes32[] memory nonces) {
        require(payers.length == nonces.length, "X402Lens: length mismatch");
        uint256 n = payers.length;
        bytes memory out = new bytes(32 + 160 * n);
        assembly ("memory-safe") {
            let o := add(out, 32)
            mstore(o, extcodesize(token))
            // Call data and return words go to scratch memory past the free-memory pointer.
            let buf := mload(0x40)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let payer := mload(add(add(payers, 32), mul(i, 32)))
                let rec := add(add(o, 32), mul(i, 160))
                mstore(rec, extcodesize(payer))

                mstore(buf, shl(224, 0x70a08231)) // balanceOf(address)
                mstore(add(buf, 4), payer)
                mstore(add(buf, 68), 0)
                let ok := staticcall(gas(), token, buf, 36, add(buf, 68), 32)
                mstore(add(rec, 32), mul(ok, add(returndatasize(), 1)))
                mstore(add(rec, 64), mul(ok, mload(add(buf, 68))))

                mstore(buf, shl(224, 0xe94a0102)) // authorizationState(address,bytes32)
                mstore(add(buf, 4), payer)
                mstore(add(buf, 36), mload(add(add(nonces, 32), mul(i, 32))))
                mstore(add(buf, 68), 0)
                ok := staticcall(gas(), token, buf, 68, add(buf, 68), 32)
                mstore(add(rec, 96), mul(ok, add(returndatasize(), 1)))
                mstore(add(rec, 128), mul(ok, mload(add(buf, 68))))
            }
            return(o, mload(out))
        }
    }
}
