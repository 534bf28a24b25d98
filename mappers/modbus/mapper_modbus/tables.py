"""The four Modbus data tables, their function codes and the PDU limits of the specification.

Kept apart from ``config`` so the planner and codec can use them without pydantic.
"""

from __future__ import annotations

from enum import StrEnum

# Modbus Application Protocol V1.1b3: quantities allowed in one request.
MAX_READ_REGISTERS = 125  # FC03/FC04
MAX_READ_BITS = 2000  # FC01/FC02
MAX_WRITE_REGISTERS = 123  # FC16
MAX_WRITE_BITS = 1968  # FC15
MAX_ADDRESS = 0xFFFF


class FunctionCode:
    """Function codes used by the mapper (plain ints, as they go on the wire and into plans)."""

    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_COILS = 15
    WRITE_MULTIPLE_REGISTERS = 16


class Register(StrEnum):
    """A Modbus data table, spelled as KubeEdge's ``register`` visitor key spells it."""

    COIL = "CoilRegister"
    DISCRETE_INPUT = "DiscreteInputRegister"
    HOLDING = "HoldingRegister"
    INPUT = "InputRegister"

    @property
    def is_bit(self) -> bool:
        """True for the 1-bit tables (coils, discrete inputs)."""
        return self in (Register.COIL, Register.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        """True for the tables a master may write (coils, holding registers)."""
        return self in (Register.COIL, Register.HOLDING)

    @property
    def read_function(self) -> int:
        """The function code that reads this table."""
        return _READ_FUNCTION[self]

    @property
    def max_read(self) -> int:
        """The most registers or bits one read request may ask for."""
        return MAX_READ_BITS if self.is_bit else MAX_READ_REGISTERS


_READ_FUNCTION = {
    Register.COIL: FunctionCode.READ_COILS,
    Register.DISCRETE_INPUT: FunctionCode.READ_DISCRETE_INPUTS,
    Register.HOLDING: FunctionCode.READ_HOLDING_REGISTERS,
    Register.INPUT: FunctionCode.READ_INPUT_REGISTERS,
}

REGISTER_BY_READ_FUNCTION = {fc: table for table, fc in _READ_FUNCTION.items()}
