"""Tests of peregrine_rt.testing itself."""
