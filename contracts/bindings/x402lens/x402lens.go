// Code generated via abigen V2 - DO NOT EDIT.
// This file is a generated binding and any manual changes will be lost.

package x402lens

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

// X402LensMetaData contains all meta data concerning the X402Lens contract.
var X402LensMetaData = bind.MetaData{
	ABI: "[{\"inputs\":[{\"internalType\":\"address\",\"name\":\"token\",\"type\":\"address\"},{\"internalType\":\"address[]\",\"name\":\"payers\",\"type\":\"address[]\"},{\"internalType\":\"bytes32[]\",\"name\":\"nonces\",\"type\":\"bytes32[]\"}],\"stateMutability\":\"nonpayable\",\"type\":\"constructor\"}]",
	ID:  "X402Lens",
	Bin: "0x608060405234801561000f575f5ffd5b506040516103a23803806103a283398101604081905261002e9161028a565b80518251146100835760405162461bcd60e51b815260206004820152601960248201527f583430324c656e733a206c656e677468206d69736d6174636800000000000000604482015260640160405180910390fd5b81515f6100918260a0610371565b61009c90602061038e565b6001600160401b038111156100b3576100b36101ba565b6040519080825280601f01601f1916602001820160405280156100dd576020820181803683370190505b50905060208101853b81526040515f5b84811015610198576020810260208801015160a082026020850101813b81526370a0823160e01b84528160048501525f60448501526020604485016024868d5afa3d600101810260208381019190915260448681018051840260408601526374a5008160e11b8852600488018690528683028c0183015160248901525f815290878e5afa905060013d01810260608301526044850151810260808301525050506001810190506100ed565b5050815181f35b80516001600160a01b03811681146101b5575f5ffd5b919050565b634e487b7160e01b5f52604160045260245ffd5b604051601f8201601f191681016001600160401b03811182821017156101f6576101f66101ba565b604052919050565b5f6001600160401b03821115610216576102166101ba565b5060051b60200190565b5f82601f83011261022f575f5ffd5b815161024261023d826101fe565b6101ce565b8082825260208201915060208360051b860101925085831115610263575f5ffd5b602085015b83811015610280578051835260209283019201610268565b5095945050505050565b5f5f5f6060848603121561029c575f5ffd5b6102a58461019f565b60208501519093506001600160401b038111156102c0575f5ffd5b8401601f810186136102d0575f5ffd5b80516102de61023d826101fe565b8082825260208201915060208360051b8501019250888311156102ff575f5ffd5b6020840193505b82841015610328576103178461019f565b825260209384019390910190610306565b6040880151909550925050506001600160401b03811115610347575f5ffd5b61035386828701610220565b9150509250925092565b634e487b7160e01b5f52601160045260245ffd5b80820281158282048414176103885761038861035d565b92915050565b808201808211156103885761038861035d56fe",
}

// X402Lens is an auto generated Go binding around an Ethereum contract.
type X402Lens struct {
	abi abi.ABI
}

// GetABI returns the ABI associated with this contract binding.
func (c *X402Lens) GetABI() abi.ABI {
	return c.abi
}

// NewX402Lens creates a new instance of X402Lens.
func NewX402Lens() *X402Lens {
	parsed, err := X402LensMetaData.ParseABI()
	if err != nil {
		panic(errors.New("invalid ABI: " + err.Error()))
	}
	return &X402Lens{abi: *parsed}
}

// Instance creates a wrapper for a deployed contract instance at the given address.
// Use this to create the instance object passed to abigen v2 library functions Call, Transact, etc.
func (c *X402Lens) Instance(backend bind.ContractBackend, addr common.Address) *bind.BoundContract {
	return bind.NewBoundContract(addr, c.abi, backend, backend, backend)
}

// PackConstructor is the Go binding used to pack the parameters required for
// contract deployment.
//
// Solidity: constructor(address token, address[] payers, bytes32[] nonces) returns()
func (x402Lens *X402Lens) PackConstructor(token common.Address, payers []common.Address, nonces [][32]byte) []byte {
	enc, err := x402Lens.abi.Pack("", token, payers, nonces)
	if err != nil {
		panic(err)
	}
	return enc
}
