// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title TestWallet
/// @notice A minimal ERC-1271 contract wallet for tests: a signature is valid when it is the
/// owner's canonical 65-byte ECDSA signature over the hash itself (no prefix), which is how
/// smart-account owners sign EIP-712 digests. Tokens it holds move only through EIP-3009
/// authorizations its owner signed.
contract TestWallet {
    bytes4 private constant ERC1271_MAGIC = 0x1626ba7e;
    uint256 private constant HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    /// @notice ERC-1271: 0x1626ba7e when `signature` is the owner's signature of `hash`, else 0xffffffff.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) {
            return 0xffffffff;
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > HALF_CURVE_ORDER || (v != 27 && v != 28)) {
            return 0xffffffff;
        }
        address recovered = ecrecover(hash, v, r, s);
        return recovered != address(0) && recovered == owner ? ERC1271_MAGIC : bytes4(0xffffffff);
    }
}
