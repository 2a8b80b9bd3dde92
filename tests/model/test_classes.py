"""Counts and classes: one mapping, used by training, the verifier and the dashboard."""
import pytest
import torch

from binventory.model.classes import CountClasses


@pytest.mark.parametrize("classes", [CountClasses(0, 5, True), CountClasses(1, 5, False),
                                     CountClasses(2, 2, True)])
def test_names_read_back_as_the_same_classes(classes):
    assert CountClasses.from_names(classes.names) == classes


@pytest.mark.parametrize("names", [[], ["0", "2"], ["6+"], ["a", "b+"], ["3", "2"], ["0", "1+", "2"]])
def test_other_names_are_refused(names):
    with pytest.raises(ValueError, match="not the names of count classes"):
        CountClasses.from_names(names)


def test_index_of_holds_a_count_only_in_its_own_class():
    c, no = CountClasses(0, 5, True), CountClasses(1, 5, False)
    assert [c.index_of(e) for e in (0, 5, 6, 40)] == [0, 5, 6, 6]
    assert [no.index_of(e) for e in (0, 1, 5, 6)] == [-1, 0, 4, -1]
    # Training targets clamp instead: a 0 becomes class 0 ("1") for a 1-5 head.
    assert no.to_class(torch.tensor([0, 6])).tolist() == [0, 4]
