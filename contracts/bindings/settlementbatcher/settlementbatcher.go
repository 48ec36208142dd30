// Code generated via abigen V2 - DO NOT EDIT.
// This file is a generated binding and any manual changes will be lost.

package settlementbatcher

import (
	"bytes"
	"errors"
	"math/big"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// Reference imports to suppress errors if they are not otherwise used.
var (
	_ = bytes.Equal
	_ = errors.New
	_ = big.NewInt
	_ = common.Big1
	_ = types.BloomLookup
	_ = abi.ConvertType
)

// SettlementBatcherAuthorization is an auto generated low-level Go binding around an user-defined struct.
type SettlementBatcherAuthorization struct {
	From        common.Address
	To          common.Address
	Value       *big.Int
	ValidAfter  *big.Int
	ValidBefore *big.Int
	Nonce       [32]byte
	Signature   []byte
}

// SettlementBatcherMetaData contains all meta data concerning the SettlementBatcher contract.
var SettlementBatcherMetaData = bind.MetaData{
	ABI: "[{\"inputs\":[{\"internalType\":\"address\",\"name\":\"operator_\",\"type\":\"address\"}],\"stateMutability\":\"nonpayable\",\"type\":\"constructor\"},{\"anonymous\":false,\"inputs\":[{\"indexed\":true,\"internalType\":\"address\",\"name\":\"previousOperator\",\"type\":\"address\"},{\"indexed\":true,\"internalType\":\"address\",\"name\":\"newOperator\",\"type\":\"address\"}],\"name\":\"OperatorChanged\",\"type\":\"event\"},{\"anonymous\":false,\"inputs\":[{\"indexed\":true,\"internalType\":\"address\",\"name\":\"previousOwner\",\"type\":\"address\"},{\"indexed\":true,\"internalType\":\"address\",\"name\":\"newOwner\",\"type\":\"address\"}],\"name\":\"OwnershipTransferred\",\"type\":\"event\"},{\"anonymous\":false,\"inputs\":[{\"indexed\":true,\"internalType\":\"bytes32\",\"name\":\"nonce\",\"type\":\"bytes32\"},{\"indexed\":true,\"internalType\":\"address\",\"name\":\"from\",\"type\":\"address\"},{\"indexed\":false,\"internalType\":\"bool\",\"name\":\"success\",\"type\":\"bool\"},{\"indexed\":false,\"internalType\":\"bytes\",\"name\":\"reason\",\"type\":\"bytes\"}],\"name\":\"Settled\",\"type\":\"event\"},{\"inputs\":[],\"name\":\"ITEM_GAS\",\"outputs\":[{\"internalType\":\"uint256\",\"name\":\"\",\"type\":\"uint256\"}],\"stateMutability\":\"view\",\"type\":\"function\"},{\"inputs\":[],\"name\":\"operator\",\"outputs\":[{\"internalType\":\"address\",\"name\":\"\",\"type\":\"address\"}],\"stateMutability\":\"view\",\"type\":\"function\"},{\"inputs\":[],\"name\":\"owner\",\"outputs\":[{\"internalType\":\"address\",\"name\":\"\",\"type\":\"address\"}],\"stateMutability\":\"view\",\"type\":\"function\"},{\"inputs\":[{\"internalType\":\"address\",\"name\":\"newOperator\",\"type\":\"address\"}],\"name\":\"setOperator\",\"outputs\":[],\"stateMutability\":\"nonpayable\",\"type\":\"function\"},{\"inputs\":[{\"internalType\":\"address\",\"name\":\"token\",\"type\":\"address\"},{\"components\":[{\"internalType\":\"address\",\"name\":\"from\",\"type\":\"address\"},{\"internalType\":\"address\",\"name\":\"to\",\"type\":\"address\"},{\"internalType\":\"uint256\",\"name\":\"value\",\"type\":\"uint256\"},{\"internalType\":\"uint256\",\"name\":\"validAfter\",\"type\":\"uint256\"},{\"internalType\":\"uint256\",\"name\":\"validBefore\",\"type\":\"uint256\"},{\"internalType\":\"bytes32\",\"name\":\"nonce\",\"type\":\"bytes32\"},{\"internalType\":\"bytes\",\"name\":\"signature\",\"type\":\"bytes\"}],\"internalType\":\"structSettlementBatcher.Authorization[]\",\"name\":\"auths\",\"type\":\"tuple[]\"}],\"name\":\"settleBatch\",\"outputs\":[{\"internalType\":\"bool[]\",\"name\":\"success\",\"type\":\"bool[]\"}],\"stateMutability\":\"nonpayable\",\"type\":\"function\"},{\"inputs\":[{\"internalType\":\"address\",\"name\":\"newOwner\",\"type\":\"address\"}],\"name\":\"transferOwnership\",\"outputs\":[],\"stateMutability\":\"nonpayable\",\"type\":\"function\"}]",
	ID:  "SettlementBatcher",
	Bin: "0x6080604052348015600e575f5ffd5b506040516109f53803806109f5833981016040819052602b9160b9565b5f8054336001600160a01b031991821681178355600180549092166001600160a01b038516179091556040519091907f8be0079c531659141344cd1fd0a4f28419497f9722a3daafe3b4186f6b6457e0908290a36040516001600160a01b038216905f907fd58299b712891143e76310d5e664c4203c940a67db37cf856bdaa3c5c76a802c908290a35060e4565b5f6020828403121560c8575f5ffd5b81516001600160a01b038116811460dd575f5ffd5b9392505050565b610904806100f15f395ff3fe608060405234801561000f575f5ffd5b5060043610610060575f3560e01c80632430155914610064578063412d24e214610081578063570ca735146100a15780638da5cb5b146100cc578063b3ab15fb146100de578063f2fde38b146100f3575b5f5ffd5b61006e620493e081565b6040519081526020015b60405180910390f35b61009461008f366004610623565b610106565b60405161007891906106a4565b6001546100b4906001600160a01b031681565b6040516001600160a01b039091168152602001610078565b5f546100b4906001600160a01b031681565b6100f16100ec3660046106e8565b610493565b005b6100f16101013660046106e8565b610517565b6001546060906001600160a01b0316331461017e5760405162461bcd60e51b815260206004820152602d60248201527f536574746c656d656e74426174636865723a2063616c6c6572206973206e6f7460448201526c103a34329037b832b930ba37b960991b60648201526084015b60405180910390fd5b5f846001600160a01b03163b116101e35760405162461bcd60e51b8152602060048201526024808201527f536574746c656d656e74426174636865723a20746f6b656e20686173206e6f20604482015263636f646560e01b6064820152608401610175565b8167ffffffffffffffff8111156101fc576101fc610708565b604051908082528060200260200182016040528015610225578160200160208202803683370190505b5090505f5b8281101561048b57617530610243603f620493e061071c565b61025090620493e061073b565b61025a919061073b565b5a10156102a95760405162461bcd60e51b815260206004820152601d60248201527f536574746c656d656e74426174636865723a206f7574206f66206761730000006044820152606401610175565b368484838181106102bc576102bc610760565b90506020028101906102ce9190610774565b90506001600160a01b03861663cf092995620493e06102f060208501856106e8565b61030060408601602087016106e8565b60408601356060870135608088013560a089013561032160c08b018b610792565b6040518a63ffffffff1660e01b81526004016103449897969594939291906107dc565b5f604051808303815f88803b15801561035b575f5ffd5b5087f19350505050801561036d575060015b6103fa573d80801561039a576040519150601f19603f3d011682016040523d82523d5f602084013e61039f565b606091505b506103ad60208301836106e8565b6001600160a01b03168260a001357f9943bc2cecfad12bc62e462b192413f7a032c6a79d36b9a5ecd66d587fc9f4b25f846040516103ec929190610846565b60405180910390a350610482565b600183838151811061040e5761040e610760565b911515602092830291909101820152610429908201826106e8565b6001600160a01b03168160a001357f9943bc2cecfad12bc62e462b192413f7a032c6a79d36b9a5ecd66d587fc9f4b2600160405161047991151581526040602082018190525f9082015260600190565b60405180910390a35b5060010161022a565b509392505050565b5f546001600160a01b031633146104bc5760405162461bcd60e51b815260040161017590610884565b6001546040516001600160a01b038084169216907fd58299b712891143e76310d5e664c4203c940a67db37cf856bdaa3c5c76a802c905f90a3600180546001600160a01b0319166001600160a01b0392909216919091179055565b5f546001600160a01b031633146105405760405162461bcd60e51b815260040161017590610884565b6001600160a01b0381166105af5760405162461bcd60e51b815260206004820152603060248201527f536574746c656d656e74426174636865723a206e6577206f776e65722069732060448201526f746865207a65726f206164647265737360801b6064820152608401610175565b5f80546040516001600160a01b03808516939216917f8be0079c531659141344cd1fd0a4f28419497f9722a3daafe3b4186f6b6457e091a35f80546001600160a01b0319166001600160a01b0392909216919091179055565b80356001600160a01b038116811461061e575f5ffd5b919050565b5f5f5f60408486031215610635575f5ffd5b61063e84610608565b9250602084013567ffffffffffffffff811115610659575f5ffd5b8401601f81018613610669575f5ffd5b803567ffffffffffffffff81111561067f575f5ffd5b8660208260051b8401011115610693575f5ffd5b939660209190910195509293505050565b602080825282518282018190525f918401906040840190835b818110156106dd57835115158352602093840193909201916001016106bd565b509095945050505050565b5f602082840312156106f8575f5ffd5b61070182610608565b9392505050565b634e487b7160e01b5f52604160045260245ffd5b5f8261073657634e487b7160e01b5f52601260045260245ffd5b500490565b8082018082111561075a57634e487b7160e01b5f52601160045260245ffd5b92915050565b634e487b7160e01b5f52603260045260245ffd5b5f823560de19833603018112610788575f5ffd5b9190910192915050565b5f5f8335601e198436030181126107a7575f5ffd5b83018035915067ffffffffffffffff8211156107c1575f5ffd5b6020019150368190038213156107d5575f5ffd5b9250929050565b6001600160a01b0389811682528816602082015260408101879052606081018690526080810185905260a0810184905260e060c08201819052810182905281836101008301375f81830161010090810191909152601f909201601f19160101979650505050505050565b8215158152604060208201525f82518060408401528060208501606085015e5f606082850101526060601f19601f8301168401019150509392505050565b6020808252602a908201527f536574746c656d656e74426174636865723a2063616c6c6572206973206e6f74604082015269103a34329037bbb732b960b11b60608201526080019056fea2646970667358221220e4025be3efe2df2a97d37234926d817d057806904535a0d605204874565078d564736f6c634300081c0033",
}

// SettlementBatcher is an auto generated Go binding around an Ethereum contract.
type SettlementBatcher struct {
	abi abi.ABI
}

// GetABI returns the ABI associated with this contract binding.
func (c *SettlementBatcher) GetABI() abi.ABI {
	return c.abi
}

// NewSettlementBatcher creates a new instance of SettlementBatcher.
func NewSettlementBatcher() *SettlementBatcher {
	parsed, err := SettlementBatcherMetaData.ParseABI()
	if err != nil {
		panic(errors.New("invalid ABI: " + err.Error()))
	}
	return &SettlementBatcher{abi: *parsed}
}

// Instance creates a wrapper for a deployed contract instance at the given address.
// Use this to create the instance object passed to abigen v2 library functions Call, Transact, etc.
func (c *SettlementBatcher) Instance(backend bind.ContractBackend, addr common.Address) *bind.BoundContract {
	return bind.NewBoundContract(addr, c.abi, backend, backend, backend)
}

// PackConstructor is the Go binding used to pack the parameters required for
// contract deployment.
//
// Solidity: constructor(address operator_) returns()
func (settlementBatcher *SettlementBatcher) PackConstructor(operator_ common.Address) []byte {
	enc, err := settlementBatcher.abi.Pack("", operator_)
	if err != nil {
		panic(err)
	}
	return enc
}

// PackITEMGAS is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x24301559.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function ITEM_GAS() view returns(uint256)
func (settlementBatcher *SettlementBatcher) PackITEMGAS() []byte {
	enc, err := settlementBatcher.abi.Pack("ITEM_GAS")
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackITEMGAS is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x24301559.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function ITEM_GAS() view returns(uint256)
func (settlementBatcher *SettlementBatcher) TryPackITEMGAS() ([]byte, error) {
	return settlementBatcher.abi.Pack("ITEM_GAS")
}

// UnpackITEMGAS is the Go binding that unpacks the parameters returned
// from invoking the contract method with ID 0x24301559.
//
// Solidity: function ITEM_GAS() view returns(uint256)
func (settlementBatcher *SettlementBatcher) UnpackITEMGAS(data []byte) (*big.Int, error) {
	out, err := settlementBatcher.abi.Unpack("ITEM_GAS", data)
	if err != nil {
		return new(big.Int), err
	}
	out0 := abi.ConvertType(out[0], new(big.Int)).(*big.Int)
	return out0, nil
}

// PackOperator is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x570ca735.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function operator() view returns(address)
func (settlementBatcher *SettlementBatcher) PackOperator() []byte {
	enc, err := settlementBatcher.abi.Pack("operator")
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackOperator is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x570ca735.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function operator() view returns(address)
func (settlementBatcher *SettlementBatcher) TryPackOperator() ([]byte, error) {
	return settlementBatcher.abi.Pack("operator")
}

// UnpackOperator is the Go binding that unpacks the parameters returned
// from invoking the contract method with ID 0x570ca735.
//
// Solidity: function operator() view returns(address)
func (settlementBatcher *SettlementBatcher) UnpackOperator(data []byte) (common.Address, error) {
	out, err := settlementBatcher.abi.Unpack("operator", data)
	if err != nil {
		return *new(common.Address), err
	}
	out0 := *abi.ConvertType(out[0], new(common.Address)).(*common.Address)
	return out0, nil
}

// PackOwner is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x8da5cb5b.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function owner() view returns(address)
func (settlementBatcher *SettlementBatcher) PackOwner() []byte {
	enc, err := settlementBatcher.abi.Pack("owner")
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackOwner is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x8da5cb5b.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function owner() view returns(address)
func (settlementBatcher *SettlementBatcher) TryPackOwner() ([]byte, error) {
	return settlementBatcher.abi.Pack("owner")
}

// UnpackOwner is the Go binding that unpacks the parameters returned
// from invoking the contract method with ID 0x8da5cb5b.
//
// Solidity: function owner() view returns(address)
func (settlementBatcher *SettlementBatcher) UnpackOwner(data []byte) (common.Address, error) {
	out, err := settlementBatcher.abi.Unpack("owner", data)
	if err != nil {
		return *new(common.Address), err
	}
	out0 := *abi.ConvertType(out[0], new(common.Address)).(*common.Address)
	return out0, nil
}

// PackSetOperator is the Go binding used to pack the parameters required for calling
// the contract method with ID 0xb3ab15fb.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function setOperator(address newOperator) returns()
func (settlementBatcher *SettlementBatcher) PackSetOperator(newOperator common.Address) []byte {
	enc, err := settlementBatcher.abi.Pack("setOperator", newOperator)
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackSetOperator is the Go binding used to pack the parameters required for calling
// the contract method with ID 0xb3ab15fb.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function setOperator(address newOperator) returns()
func (settlementBatcher *SettlementBatcher) TryPackSetOperator(newOperator common.Address) ([]byte, error) {
	return settlementBatcher.abi.Pack("setOperator", newOperator)
}

// PackSettleBatch is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x412d24e2.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function settleBatch(address token, (address,address,uint256,uint256,uint256,bytes32,bytes)[] auths) returns(bool[] success)
func (settlementBatcher *SettlementBatcher) PackSettleBatch(token common.Address, auths []SettlementBatcherAuthorization) []byte {
	enc, err := settlementBatcher.abi.Pack("settleBatch", token, auths)
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackSettleBatch is the Go binding used to pack the parameters required for calling
// the contract method with ID 0x412d24e2.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function settleBatch(address token, (address,address,uint256,uint256,uint256,bytes32,bytes)[] auths) returns(bool[] success)
func (settlementBatcher *SettlementBatcher) TryPackSettleBatch(token common.Address, auths []SettlementBatcherAuthorization) ([]byte, error) {
	return settlementBatcher.abi.Pack("settleBatch", token, auths)
}

// UnpackSettleBatch is the Go binding that unpacks the parameters returned
// from invoking the contract method with ID 0x412d24e2.
//
// Solidity: function settleBatch(address token, (address,address,uint256,uint256,uint256,bytes32,bytes)[] auths) returns(bool[] success)
func (settlementBatcher *SettlementBatcher) UnpackSettleBatch(data []byte) ([]bool, error) {
	out, err := settlementBatcher.abi.Unpack("settleBatch", data)
	if err != nil {
		return *new([]bool), err
	}
	out0 := *abi.ConvertType(out[0], new([]bool)).(*[]bool)
	return out0, nil
}

// PackTransferOwnership is the Go binding used to pack the parameters required for calling
// the contract method with ID 0xf2fde38b.  This method will panic if any
// invalid/nil inputs are passed.
//
// Solidity: function transferOwnership(address newOwner) returns()
func (settlementBatcher *SettlementBatcher) PackTransferOwnership(newOwner common.Address) []byte {
	enc, err := settlementBatcher.abi.Pack("transferOwnership", newOwner)
	if err != nil {
		panic(err)
	}
	return enc
}

// TryPackTransferOwnership is the Go binding used to pack the parameters required for calling
// the contract method with ID 0xf2fde38b.  This method will return an error
// if any inputs are invalid/nil.
//
// Solidity: function transferOwnership(address newOwner) returns()
func (settlementBatcher *SettlementBatcher) TryPackTransferOwnership(newOwner common.Address) ([]byte, error) {
	return settlementBatcher.abi.Pack("transferOwnership", newOwner)
}

// SettlementBatcherOperatorChanged represents a OperatorChanged event raised by the SettlementBatcher contract.
type SettlementBatcherOperatorChanged struct {
	PreviousOperator common.Address
	NewOperator      common.Address
	Raw              *types.Log // Blockchain specific contextual infos
}

const SettlementBatcherOperatorChangedEventName = "OperatorChanged"

// ContractEventName returns the user-defined event name.
func (SettlementBatcherOperatorChanged) ContractEventName() string {
	return SettlementBatcherOperatorChangedEventName
}

// UnpackOperatorChangedEvent is the Go binding that unpacks the event data emitted
// by contract.
//
// Solidity: event OperatorChanged(address indexed previousOperator, address indexed newOperator)
func (settlementBatcher *SettlementBatcher) UnpackOperatorChangedEvent(log *types.Log) (*SettlementBatcherOperatorChanged, error) {
	event := "OperatorChanged"
	if len(log.Topics) == 0 {
		return nil, bind.ErrNoEventSignature
	}
	if log.Topics[0] != settlementBatcher.abi.Events[event].ID {
		return nil, bind.ErrEventSignatureMismatch
	}
	out := new(SettlementBatcherOperatorChanged)
	if len(log.Data) > 0 {
		if err := settlementBatcher.abi.UnpackIntoInterface(out, event, log.Data); err != nil {
			return nil, err
		}
	}
	var indexed abi.Arguments
	for _, arg := range settlementBatcher.abi.Events[event].Inputs {
		if arg.Indexed {
			indexed = append(indexed, arg)
		}
	}
	if err := abi.ParseTopics(out, indexed, log.Topics[1:]); err != nil {
		return nil, err
	}
	out.Raw = log
	return out, nil
}

// SettlementBatcherOwnershipTransferred represents a OwnershipTransferred event raised by the SettlementBatcher contract.
type SettlementBatcherOwnershipTransferred struct {
	PreviousOwner common.Address
	NewOwner      common.Address
	Raw           *types.Log // Blockchain specific contextual infos
}

const SettlementBatcherOwnershipTransferredEventName = "OwnershipTransferred"

// ContractEventName returns the user-defined event name.
func (SettlementBatcherOwnershipTransferred) ContractEventName() string {
	return SettlementBatcherOwnershipTransferredEventName
}

// UnpackOwnershipTransferredEvent is the Go binding that unpacks the event data emitted
// by contract.
//
// Solidity: event OwnershipTransferred(address indexed previousOwner, address indexed newOwner)
func (settlementBatcher *SettlementBatcher) UnpackOwnershipTransferredEvent(log *types.Log) (*SettlementBatcherOwnershipTransferred, error) {
	event := "OwnershipTransferred"
	if len(log.Topics) == 0 {
		return nil, bind.ErrNoEventSignature
	}
	if log.Topics[0] != settlementBatcher.abi.Events[event].ID {
		return nil, bind.ErrEventSignatureMismatch
	}
	out := new(SettlementBatcherOwnershipTransferred)
	if len(log.Data) > 0 {
		if err := settlementBatcher.abi.UnpackIntoInterface(out, event, log.Data); err != nil {
			return nil, err
		}
	}
	var indexed abi.Arguments
	for _, arg := range settlementBatcher.abi.Events[event].Inputs {
		if arg.Indexed {
			indexed = append(indexed, arg)
		}
	}
	if err := abi.ParseTopics(out, indexed, log.Topics[1:]); err != nil {
		return nil, err
	}
	out.Raw = log
	return out, nil
}

// SettlementBatcherSettled represents a Settled event raised by the SettlementBatcher contract.
type SettlementBatcherSettled struct {
	Nonce   [32]byte
	From    common.Address
	Success bool
	Reason  []byte
	Raw     *types.Log // Blockchain specific contextual infos
}

const SettlementBatcherSettledEventName = "Settled"

// ContractEventName returns the user-defined event name.
func (SettlementBatcherSettled) ContractEventName() string {
	return SettlementBatcherSettledEventName
}

// UnpackSettledEvent is the Go binding that unpacks the event data emitted
// by contract.
//
// Solidity: event Settled(bytes32 indexed nonce, address indexed from, bool success, bytes reason)
func (settlementBatcher *SettlementBatcher) UnpackSettledEvent(log *types.Log) (*SettlementBatcherSettled, error) {
	event := "Settled"
	if len(log.Topics) == 0 {
		return nil, bind.ErrNoEventSignature
	}
	if log.Topics[0] != settlementBatcher.abi.Events[event].ID {
		return nil, bind.ErrEventSignatureMismatch
	}
	out := new(SettlementBatcherSettled)
	if len(log.Data) > 0 {
		if err := settlementBatcher.abi.UnpackIntoInterface(out, event, log.Data); err != nil {
			return nil, err
		}
	}
	var indexed abi.Arguments
	for _, arg := range settlementBatcher.abi.Events[event].Inputs {
		if arg.Indexed {
			indexed = append(indexed, arg)
		}
	}
	if err := abi.ParseTopics(out, indexed, log.Topics[1:]); err != nil {
		return nil, err
	}
	out.Raw = log
	return out, nil
}
