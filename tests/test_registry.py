"""The method registry: duplicates and typos fail loudly, with suggestions."""

from __future__ import annotations

import pytest

from tvr_convbench.core.errors import DuplicateNameError, UnknownNameError
from tvr_convbench.core.registry import Registry
from tvr_convbench.methods import METHODS, build_method, list_methods, method_parameters, register_method
from tvr_convbench.methods.base import CostClass, RetrievalMethod

EXPECTED = {"drl", "glccl", "glscl", "meanp", "random", "seqtransf", "xclip", "xpool"}


def test_every_method_of_the_study_is_registered():
    assert set(list_methods()) >= EXPECTED


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match=r"did you mean 'glscl'") as err:
        build_method("glscll", width=8, max_frames=2, max_words=4)
    assert "valid:" in str(err.value)


def test_duplicate_registration_raises():
    registry = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(DuplicateNameError, match="already registered"):
        registry.register("a")(float)


def test_duplicate_method_name_raises():
    with pytest.raises(DuplicateNameError, match="'glscl' is already registered"):

        @register_method("glscl")
        class Impostor(RetrievalMethod):  # pragma: no cover - never instantiated
            cost_class = CostClass.INDEPENDENT


def test_unknown_kwarg_is_named_with_suggestion():
    with pytest.raises(UnknownNameError, match=r"unknown key 'temporal_layer'.*did you mean 'temporal_layers'"):
        build_method("seqtransf", width=8, max_frames=2, max_words=4, temporal_layer=2)


def test_preset_is_fixed_by_the_name():
    with pytest.raises(UnknownNameError, match="fixed"):
        build_method("meanp", width=8, max_frames=2, max_words=4, header="seqtransf")
    assert "header" not in method_parameters("meanp")
    assert METHODS.get("meanp").cls is METHODS.get("seqtransf").cls


def test_invalid_name_rejected():
    with pytest.raises(ValueError, match="invalid"):
        Registry("thing").register("bad name")


def test_built_method_knows_its_name():
    assert build_method("meanp", width=8, max_frames=2, max_words=4).method_name == "meanp"
