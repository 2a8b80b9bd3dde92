"""``binventory inventory status`` on what a database can hold."""
import pytest

from binventory.inventory.cli import print_status
from binventory.inventory.models import Model


@pytest.mark.parametrize("policy, line", [
    (None, "model m-1: t_confirm=?, t_flag=? (? verifier)"),
    ({"t_confirm": 0.9512, "verifier": None}, "model m-1: t_confirm=0.951, t_flag=? (? verifier)"),
    ({"t_confirm": 0.95, "t_flag": 0.02, "verifier": {"kind": "record"}},
     "model m-1: t_confirm=0.95, t_flag=0.02 (record verifier)")])
def test_status_names_the_model_whatever_its_policy_holds(db, capsys, policy, line):
    with db.session() as s:
        s.add(Model(version="m-1", name="m", path="", policy=policy))
    print_status(db)
    assert line in capsys.readouterr().out
