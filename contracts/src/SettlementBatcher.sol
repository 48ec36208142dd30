// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @dev The one EIP-3009 entry point the batcher relays (FiatTokenV2_2 selector 0xcf092995).
interface IEIP3009 {
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external;
}

/// @title SettlementBatcher
/// @notice Settles many EIP-3009 authorizations of one token in a single transaction. Each item
/// runs in its own try/catch, so a used, expired or badly signed authorization fails alone and
/// is reported in a Settled event; the others still move. Only the operator (the gateway's
/// settlement key) may call settleBatch, so nobody else can burn authorizations through it at
/// an unexpected moment. The batcher never holds funds: tokens go straight from payer to payee.
contract SettlementBatcher {
    /// @notice One signed EIP-3009 TransferWithAuthorization.
    struct Authorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
        bytes signature;
    }

    /// @notice Gas forwarded to the token per item: ample for ECDSA (~45k) and ordinary ERC-1271
    /// wallets, and a ceiling on what one hostile wallet can burn of the batch.
    uint256 public constant ITEM_GAS = 300_000;
    /// @dev Gas kept back per item for encoding the call and emitting Settled.
    uint256 private constant ITEM_OVERHEAD = 30_000;

    address public owner;
    address public operator;

    /// @notice Outcome of one item; `reason` is the token's raw revert data when it failed.
    event Settled(bytes32 indexed nonce, address indexed from, bool success, bytes reason);
    event OperatorChanged(address indexed previousOperator, address indexed newOperator);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    modifier onlyOwner() {
        require(msg.sender == owner, "SettlementBatcher: caller is not the owner");
        _;
    }

    constructor(address operator_) {
        owner = msg.sender;
        operator = operator_;
        emit OwnershipTransferred(address(0), msg.sender);
        emit OperatorChanged(address(0), operator_);
    }

    /// @notice Replaces the operator, e.g. when the settlement key rotates.
    function setOperator(address newOperator) external onlyOwner {
        emit OperatorChanged(operator, newOperator);
        operator = newOperator;
    }

    /// @notice Hands the right to change the operator to `newOwner`.
    function transferOwnership(address newOwner) external onlyOwner {
        require(newOwner != address(0), "SettlementBatcher: new owner is the zero address");
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// @notice Relays every authorization to `token`; returns one success flag per item, in order,
    /// so an eth_call of the same batch previews the outcome.
    function settleBatch(address token, Authorization[] calldata auths) external returns (bool[] memory success) {
        require(msg.sender == operator, "SettlementBatcher: caller is not the operator");
        // A call to an address without code "succeeds" and would report every item as settled.
        require(token.code.length > 0, "SettlementBatcher: token has no code");
        success = new bool[](auths.length);
        for (uint256 i = 0; i < auths.length; i++) {
            // Every item gets its full ITEM_GAS or the whole batch reverts: an item starved by a
            // low gas limit would fail like a bad authorization, and gas estimation (which looks
            // for the least gas that does not revert) would happily pick such a limit.
            require(gasleft() >= ITEM_GAS + ITEM_GAS / 63 + ITEM_OVERHEAD, "SettlementBatcher: out of gas");
            Authorization calldata a = auths[i];
            try IEIP3009(token).transferWithAuthorization{gas: ITEM_GAS}(
                a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, a.signature
            ) {
                success[i] = true;
                emit Settled(a.nonce, a.from, true, "");
            } catch (bytes memory reason) {
                emit Settled(a.nonce, a.from, false, reason);
            }
        }
    }
}
