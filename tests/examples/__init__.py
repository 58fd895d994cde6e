"""Tests of the examples in examples/, written with peregrine_rt.testing as a user would."""
