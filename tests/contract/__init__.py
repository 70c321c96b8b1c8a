"""Tests of the contract: schemas/, examples/ (with the Logic Apps workflows), infra/ and our
record of the ARM operation."""
